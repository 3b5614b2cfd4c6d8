package io.kvcache.bench;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The {@code kvcache-bench} command line. Relaunches itself with
 * {@code --add-modules jdk.incubator.vector} when started without it, so {@code java -jar} runs the
 * vector kernels.
 */
@Command(name = "kvcache-bench", mixinStandardHelpOptions = true, version = "kvcache-bench 0.1.0-SNAPSHOT",
    description = "Runs kvcache's KV-cache strategies and kernels and prints memory, speed and fidelity.",
    subcommands = {CompareCommand.class, QualityCommand.class, GenerateCommand.class, DecodeCommand.class,
        JmhCommand.class, GpuCommand.class, RetentionCommand.class, PrefillCommand.class})
public final class Main implements Runnable {

  /** Set in the relaunched JVM so it never relaunches again. */
  static final String RELAUNCHED = "kvcache.bench.relaunched";

  /** The root of the command line; {@link #main} makes one, and the tests drive one directly. */
  Main() {}

  /**
   * Entry point.
   *
   * @param args command-line arguments
   * @throws Exception when the relaunch fails
   */
  public static void main(String[] args) throws Exception {
    if (ModuleLayer.boot().findModule("jdk.incubator.vector").isEmpty() && System.getProperty(RELAUNCHED) == null) {
      System.exit(relaunch(args));
    }
    System.exit(commandLine().execute(withDefaultCommand(args)));
  }

  /**
   * The command line, with bad arguments that a command finds itself (an
   * {@link IllegalArgumentException} from its {@code run}) reported as one line on stderr, like
   * picocli's own parse errors, rather than as a stack trace.
   *
   * @return a new command line
   */
  static CommandLine commandLine() {
    CommandLine cl = new CommandLine(new Main());
    cl.setExecutionExceptionHandler((e, line, parsed) -> {
      if (e instanceof IllegalArgumentException) {
        line.getErr().println(line.getCommandName() + ": " + e.getMessage());
        return line.getCommandSpec().exitCodeOnInvalidInput();
      }
      if (e instanceof JmhCommand.RunFailed) {
        // Its tables are printed; what failed is named in one line, and the exit code says so.
        line.getErr().println(line.getCommandName() + ": " + e.getMessage());
        return 1;
      }
      if (e instanceof java.io.UncheckedIOException io) {
        // A file that cannot be read or written is the machine's state, not a defect: one line, exit 1.
        line.getErr().println(line.getCommandName() + ": " + io.getCause());
        return 1;
      }
      throw e;
    });
    return cl;
  }

  /**
   * {@code compare} is the default: with no subcommand (no arguments, or options only), the
   * arguments go to it.
   */
  static String[] withDefaultCommand(String[] args) {
    boolean topLevel = args.length == 1 && List.of("-h", "--help", "-V", "--version").contains(args[0]);
    if (topLevel || (args.length > 0 && !args[0].startsWith("-"))) {
      return args;
    }
    String[] a = new String[args.length + 1];
    a[0] = "compare";
    System.arraycopy(args, 0, a, 1, args.length);
    return a;
  }

  /** Unreachable in practice: {@link #withDefaultCommand} always names a subcommand. */
  @Override
  public void run() {
    new CommandLine(this).usage(System.out);
  }

  private static int relaunch(String[] args) throws Exception {
    String java = ProcessHandle.current().info().command()
        .orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    List<String> cmd = new ArrayList<>();
    cmd.add(java);
    cmd.add("--add-modules=jdk.incubator.vector");
    cmd.add("-D" + RELAUNCHED + "=true");
    cmd.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
    cmd.add("-cp");
    cmd.add(System.getProperty("java.class.path"));
    cmd.add(Main.class.getName());
    cmd.addAll(List.of(args));
    return new ProcessBuilder(cmd).inheritIO().start().waitFor();
  }
}
