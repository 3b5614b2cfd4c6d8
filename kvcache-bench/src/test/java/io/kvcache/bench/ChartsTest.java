package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The quality chart draws a strategy's needle accuracy only where needle trials ran, each point at its KV ratio. */
class ChartsTest {

  @Test
  void rowsWithoutNeedleTrialsLeaveTheNeedlePanelWithoutThem(@TempDir Path tmp) throws Exception {
    double[] err = {0.1, 0.2};
    List<QualityCommand.Row> noTrials = List.of(
        new QualityCommand.Row("full-f32", -1, 100, 2.0, 0.8, 0.0, 0, 0, err),
        new QualityCommand.Row("snapKV", 256, 10, 0.1, 0.9, 0.1, 0, 0, err),
        new QualityCommand.Row("snapKV", 512, 20, 0.2, 0.85, 0.05, 0, 0, err));
    Path png = tmp.resolve("none.png");
    Charts.quality(png, noTrials, "no trials");
    assertTrue(Files.size(png) > 1000, "a chart is drawn with an empty needle panel");
    org.knowm.xchart.XYChart[] panels = Charts.qualityPanels(noTrials, "no trials");
    assertTrue(panels[0].getSeriesMap().isEmpty(), "no needle series without trials: " + panels[0].getSeriesMap().keySet());
    assertEquals(2, panels[1].getSeriesMap().get("snapKV").getXData().length, "both budgets in bits per byte");
    assertTrue(!panels[1].getSeriesMap().containsKey("full-f32"), "the reference is not a series");
    List<QualityCommand.Row> mixed = List.of(
        new QualityCommand.Row("snapKV", 256, 10, 0.1, 0.9, 0.1, 0, 0, err),
        new QualityCommand.Row("snapKV", 512, 20, 0.2, 0.85, 0.05, 3, 10, err));
    Path png2 = tmp.resolve("mixed.png");
    Charts.quality(png2, mixed, "mixed");
    assertTrue(Files.size(png2) > 1000);
    panels = Charts.qualityPanels(mixed, "mixed");
    double[] xs = panels[0].getSeriesMap().get("snapKV").getXData();
    assertEquals(1, xs.length, "only the budget with trials has a needle point");
    assertEquals(0.2, xs[0], 0.0, "the point at its own KV ratio");
    assertEquals(0.3, panels[0].getSeriesMap().get("snapKV").getYData()[0], 1e-12, "3 of 10");
  }
}
