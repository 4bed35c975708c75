/* Bridgehead console charts.
 *
 * Every element with data-chart="<id>" is drawn with plotly.js from the JSON data island
 * <script type="application/json" id="<id>">. The page carries no inline script (the Content-Security-Policy
 * allows only same-origin script files); a JSON island is data, never executed.
 *
 * Island: {"kind": "line" | "dots" | "histogram" | "bars", "title": "val_auc", "x_title": "step", "series": [...]}
 *   line: one series per run, {"name", "x": steps, "y": values (null = gap), "color": palette index,
 *     "dash": optional plotly dash style ("dash", "dot") for a reference line such as a threshold}
 *   dots: one series, {"name", "x": values, "y": run labels, "colors": palette index per run}
 *   histogram: one series, {"x": bin centres, "y": counts, "width": bin widths, "low", "high": bin edges};
 *     "dates": true puts x on a date axis (centres as timestamps, widths in milliseconds)
 *   bars: one series, horizontal, {"x": counts, "y": labels}, most frequent first; "height" in pixels
 */
(function () {
  "use strict";

  // The console's palette (bridgehead.css): brand blue first, then well-separated hues.
  var PALETTE = ["#1f4fd6", "#e8710a", "#1a7f4b", "#7b3fe4", "#0e9aa7", "#c2185b", "#8a6d00", "#5f6b7a"];
  var INK = "#1a2233";
  var MUTED = "#64708a";
  var GRID = "#edf0f6";
  var AXIS = "#cfd6e3";
  var FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

  function color(i) {
    return PALETTE[(i || 0) % PALETTE.length];
  }

  function axis(title, categorical) {
    return {
      title: { text: title || "", font: { size: 12, color: MUTED }, standoff: 10 },
      gridcolor: categorical ? "rgba(0,0,0,0)" : GRID,
      zerolinecolor: AXIS,
      linecolor: AXIS,
      showline: true,
      ticks: "outside",
      tickcolor: AXIS,
      ticklen: 4,
      tickfont: { size: 11, color: MUTED },
      automargin: true,
      separatethousands: true,
    };
  }

  function short(value) {
    return value === null || value === undefined ? "" : String(Number(value.toPrecision(4)));
  }

  function traces(spec) {
    return spec.series.map(function (s) {
      if (spec.kind === "histogram") {
        return {
          type: "bar",
          name: s.name,
          x: s.x,
          y: s.y,
          width: s.width,
          customdata: s.low.map(function (low, i) {
            return [low, s.high[i]];
          }),
          marker: { color: color(0), opacity: 0.85, line: { width: 1, color: "#ffffff" } },
          hovertemplate: spec.dates
            ? "%{customdata[0]} – %{customdata[1]}<br><b>%{y:,}</b> rows<extra></extra>"
            : "%{customdata[0]:.4~g} – %{customdata[1]:.4~g}<br><b>%{y:,}</b> rows<extra></extra>",
        };
      }
      if (spec.kind === "bars") {
        return {
          type: "bar",
          orientation: "h",
          name: s.name,
          x: s.x,
          y: s.y,
          marker: { color: color(0), opacity: 0.85 },
          text: s.x.map(function (v) {
            return v.toLocaleString();
          }),
          textposition: "outside",
          textfont: { size: 11, color: MUTED },
          cliponaxis: false,
          hovertemplate: "%{y}<br><b>%{x:,}</b> rows<extra></extra>",
        };
      }
      if (spec.kind === "dots") {
        return {
          type: "scatter",
          mode: "markers+text",
          name: s.name,
          x: s.x,
          y: s.y,
          text: s.x.map(short),
          textposition: "middle right",
          textfont: { size: 12, color: INK },
          marker: { size: 13, color: s.colors.map(color), line: { width: 2, color: "#ffffff" } },
          hovertemplate: "%{y}<br><b>%{x:.4~g}</b><extra></extra>",
          cliponaxis: false,
        };
      }
      var dense = s.x.length > 25 || Boolean(s.dash);
      return {
        type: "scatter",
        mode: dense ? "lines" : "lines+markers",
        name: s.name,
        x: s.x,
        y: s.y,
        line: { color: color(s.color), width: s.dash ? 1.5 : 2, dash: s.dash || "solid" },
        marker: { size: 6, color: color(s.color), line: { width: 1.5, color: "#ffffff" } },
        connectgaps: false,
        hovertemplate: "%{y:.4~g}",
      };
    });
  }

  // Dots: a value axis fitted to the values (room on the right for the labels) and a faint stem per run.
  function dotsLayout(spec, base) {
    var s = spec.series[0];
    var values = s.x.filter(function (v) {
      return v !== null;
    });
    if (!values.length) {
      return base;
    }
    var lo = Math.min.apply(null, values);
    var hi = Math.max.apply(null, values);
    var span = hi - lo || Math.abs(hi) * 0.1 || 1;
    var start = lo - span * 0.4;
    base.xaxis.range = [start, hi + span * 0.55];
    base.xaxis.zeroline = false;
    base.yaxis.autorange = "reversed";
    base.yaxis.type = "category";
    base.yaxis.ticks = "";
    base.yaxis.showline = false;
    base.yaxis.tickfont = { size: 11, color: INK };
    base.shapes = s.x.map(function (v, i) {
      return {
        type: "line",
        xref: "x",
        yref: "y",
        x0: start,
        x1: v === null ? start : v,
        y0: s.y[i],
        y1: s.y[i],
        line: { color: color(s.colors[i]), width: 3 },
        opacity: 0.3,
        layer: "below",
      };
    });
    base.hovermode = "closest";
    return base;
  }

  function layout(spec) {
    var legend = spec.kind === "line" && spec.series.length > 1;
    var base = {
      font: { family: FONT, size: 12, color: INK },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      margin: { l: 8, r: 12, t: legend ? 34 : 10, b: 8, pad: 2 },
      xaxis: axis(spec.x_title, false),
      yaxis: axis(spec.y_title, spec.kind === "dots"),
      showlegend: legend,
      legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom", font: { size: 11, color: MUTED } },
      hovermode: "x unified",
      hoverlabel: { bgcolor: "#ffffff", bordercolor: AXIS, font: { family: FONT, size: 12, color: INK } },
    };
    if (spec.kind === "histogram") {
      base.bargap = 0;
      base.hovermode = "closest";
      base.xaxis.title.text = "";
      if (spec.dates) {
        base.xaxis.type = "date";
      }
    }
    if (spec.kind === "bars") {
      base.hovermode = "closest";
      base.xaxis.title.text = "";
      base.xaxis.rangemode = "tozero";
      base.yaxis = axis("", true);
      base.yaxis.type = "category";
      base.yaxis.autorange = "reversed";
      base.yaxis.ticks = "";
      base.yaxis.showline = false;
      base.yaxis.tickfont = { size: 11, color: INK };
      base.margin.r = 36;
    }
    return spec.kind === "dots" ? dotsLayout(spec, base) : base;
  }

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    displayModeBar: "hover",
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines", "zoomIn2d", "zoomOut2d"],
    toImageButtonOptions: { format: "png", scale: 2 },
  };

  function draw(el) {
    var island = document.getElementById(el.getAttribute("data-chart"));
    if (!island) {
      return;
    }
    var spec;
    try {
      spec = JSON.parse(island.textContent);
    } catch (err) {
      el.textContent = "The chart data could not be read.";
      return;
    }
    if (spec.height) {
      el.style.height = spec.height + "px";
    }
    window.Plotly.newPlot(el, traces(spec), layout(spec), CONFIG).then(function () {
      el.classList.add("chart-ready");
    });
  }

  function init() {
    if (!window.Plotly) {
      Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (el) {
        el.textContent = "Charts need plotly.js, which did not load.";
      });
      return;
    }
    Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
