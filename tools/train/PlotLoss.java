import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;

/**
 * Draws a training run's loss curve (the loss.csv that train.py writes) as a PNG, with XChart from
 * the bench jar:
 * {@code java -cp kvcache-bench/target/kvcache-bench.jar tools/train/PlotLoss.java LOSS.csv OUT.png}.
 */
public final class PlotLoss {
  public static void main(String[] args) throws Exception {
    System.setProperty("java.awt.headless", "true");
    List<String> lines = Files.readAllLines(Path.of(args[0]));
    List<String> head = List.of(lines.get(0).split(","));
    int x = head.indexOf("tokens");
    int train = head.indexOf("train_bpb");
    int held = head.indexOf("heldout_bpb");
    List<Double> xs = new ArrayList<>();
    List<Double> tr = new ArrayList<>();
    List<Double> he = new ArrayList<>();
    for (String l : lines.subList(1, lines.size())) {
      String[] c = l.split(",");
      xs.add(Double.parseDouble(c[x]) / 1e6);
      tr.add(Double.parseDouble(c[train]));
      he.add(Double.parseDouble(c[held]));
    }
    XYChart chart = new XYChartBuilder().width(800).height(500).title(Path.of(args[0]).toString())
        .xAxisTitle("training tokens (millions)").yAxisTitle("bits per byte (axis cut at 2)").build();
    // The first point (about 8 bits per byte, an untrained model) would flatten the rest.
    chart.getStyler().setYAxisMin(0.0);
    chart.getStyler().setYAxisMax(2.0);
    chart.addSeries("train (current batch)", xs, tr);
    chart.addSeries("held-out (8 windows)", xs, he);
    BitmapEncoder.saveBitmap(chart, args[1], BitmapEncoder.BitmapFormat.PNG);
  }
}
