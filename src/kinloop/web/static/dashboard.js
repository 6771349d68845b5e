/* The dashboard's charts: each <canvas data-chart="KEY"> is drawn from the JSON in
   #chart-data (built by the server; the same numbers are in the table under each chart). */
(function () {
  "use strict";
  var COLOURS = ["#0b5cad", "#c2410c", "#6b7280", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207"];

  function draw() {
    var node = document.getElementById("chart-data");
    if (!node || typeof window.Chart === "undefined") {
      return;
    }
    var charts = JSON.parse(node.textContent).charts || {};
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec = charts[canvas.getAttribute("data-chart")];
      if (!spec) {
        return;
      }
      var line = spec.type === "line";
      var datasets = spec.datasets.map(function (set, i) {
        var colour = COLOURS[i % COLOURS.length];
        return {
          label: set.label,
          data: set.data.map(Number),
          backgroundColor: colour,
          borderColor: colour,
          borderWidth: line ? 2 : 0,
          pointRadius: line ? 0 : undefined,
          fill: false,
          tension: 0.2
        };
      });
      new window.Chart(canvas, {
        type: spec.type,
        data: { labels: spec.labels, datasets: datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: {
            x: { stacked: !!spec.stacked, ticks: { maxRotation: 0, autoSkip: true } },
            y: { stacked: !!spec.stacked, beginAtZero: !line }
          },
          plugins: { legend: { display: datasets.length > 1 } }
        }
      });
      canvas.setAttribute("data-drawn", "true");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
