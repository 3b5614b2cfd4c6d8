package io.kvcache.bench;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

/** PNG charts of a comparison, drawn with XChart, headless. */
final class Charts {

  static {
    System.setProperty("java.awt.headless", "true");
  }

  private Charts() {}

  /**
   * One point per strategy: bytes held (x, log scale) against mean attention-output error (y).
   *
   * @param file  the PNG to write
   * @param rows  the comparison
   * @param title a subtitle: the workload
   * @throws IOException when the file cannot be written
   */
  static void memoryVsFidelity(Path file, List<CompareCommand.Row> rows, String title) throws IOException {
    XYChart chart = new XYChartBuilder().width(900).height(600).title("Memory vs fidelity (" + title + ")")
        .xAxisTitle("KV bytes held").yAxisTitle("mean attention-output error vs full cache").build();
    chart.getStyler().setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
    chart.getStyler().setXAxisLogarithmic(true);
    chart.getStyler().setMarkerSize(10);
    for (CompareCommand.Row r : rows) {
      // A log axis cannot show 0: the exact strategies sit at a floor, labelled by their name.
      chart.addSeries(r.strategy(), new double[] {r.bytes()}, new double[] {Math.max(r.meanError(), 1e-7)});
    }
    BitmapEncoder.saveBitmap(chart, file.toString(), BitmapEncoder.BitmapFormat.PNG);
  }

  /**
   * Decode time per token against context, one line per strategy.
   *
   * @param file     the PNG to write
   * @param contexts the contexts measured
   * @param sweep    rows per context, strategies in the same order in each
   * @throws IOException when the file cannot be written
   */
  static void speedVsContext(Path file, int[] contexts, List<List<CompareCommand.Row>> sweep) throws IOException {
    XYChart chart = new XYChartBuilder().width(900).height(600).title("Decode time per token vs context")
        .xAxisTitle("context (tokens)").yAxisTitle("decode ms per token (all layers)").build();
    int n = sweep.get(0).size();
    for (int i = 0; i < n; i++) {
      List<Double> xs = new ArrayList<>();
      List<Double> ys = new ArrayList<>();
      for (int c = 0; c < contexts.length; c++) {
        xs.add((double) contexts[c]);
        ys.add(sweep.get(c).get(i).decodeMsPerToken());
      }
      chart.addSeries(sweep.get(0).get(i).strategy(), xs, ys).setMarker(SeriesMarkers.CIRCLE);
    }
    BitmapEncoder.saveBitmap(chart, file.toString(), BitmapEncoder.BitmapFormat.PNG);
  }

  /**
   * Two panels side by side, one series per strategy over its budgets: needle accuracy and the
   * bits-per-byte increase over the full cache, each against the KV memory held relative to f16.
   *
   * @param file  the PNG to write
   * @param rows  the quality table
   * @param title a subtitle: model and workload
   * @throws IOException when the file cannot be written
   */
  static void quality(Path file, List<QualityCommand.Row> rows, String title) throws IOException {
    XYChart[] panels = qualityPanels(rows, title);
    java.awt.image.BufferedImage left = BitmapEncoder.getBufferedImage(panels[0]);
    java.awt.image.BufferedImage right = BitmapEncoder.getBufferedImage(panels[1]);
    java.awt.image.BufferedImage both = new java.awt.image.BufferedImage(left.getWidth() + right.getWidth(),
        Math.max(left.getHeight(), right.getHeight()), java.awt.image.BufferedImage.TYPE_INT_RGB);
    java.awt.Graphics2D g = both.createGraphics();
    g.drawImage(left, 0, 0, null);
    g.drawImage(right, left.getWidth(), 0, null);
    g.dispose();
    javax.imageio.ImageIO.write(both, "png", file.toFile());
  }

  /** The quality chart's two panels, needles then bits per byte, before they are drawn. */
  static XYChart[] qualityPanels(List<QualityCommand.Row> rows, String title) {
    XYChart needles = new XYChartBuilder().width(800).height(560).title("Needle retrieval (" + title + ")")
        .xAxisTitle("KV memory vs full f16 cache").yAxisTitle("exact-match accuracy").build();
    XYChart bits = new XYChartBuilder().width(800).height(560).title("Bits per byte increase over the full f32 cache")
        .xAxisTitle("KV memory vs full f16 cache").yAxisTitle("bits per byte increase").build();
    for (XYChart c : new XYChart[] {needles, bits}) {
      c.getStyler().setXAxisLogarithmic(true);
      c.getStyler().setMarkerSize(8);
    }
    java.util.Map<String, List<QualityCommand.Row>> byName = new java.util.LinkedHashMap<>();
    for (QualityCommand.Row r : rows) {
      if (!r.strategy().equals("full-f32")) {
        byName.computeIfAbsent(r.strategy(), k -> new ArrayList<>()).add(r);
      }
    }
    for (var e : byName.entrySet()) {
      List<Double> x = new ArrayList<>();
      List<Double> xNeedles = new ArrayList<>();
      List<Double> acc = new ArrayList<>();
      List<Double> inc = new ArrayList<>();
      for (QualityCommand.Row r : e.getValue()) {
        x.add(r.kvRatio());
        inc.add(r.increase());
        if (r.needleTrials() > 0) { // no trials is no point (the table prints "-"), not 0%
          xNeedles.add(r.kvRatio());
          acc.add(r.needleAccuracy());
        }
      }
      if (!xNeedles.isEmpty()) {
        needles.addSeries(e.getKey(), xNeedles, acc).setMarker(SeriesMarkers.CIRCLE);
      }
      bits.addSeries(e.getKey(), x, inc).setMarker(SeriesMarkers.CIRCLE);
    }
    return new XYChart[] {needles, bits};
  }
}
