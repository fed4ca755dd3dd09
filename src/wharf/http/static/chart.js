// A small line chart on a <canvas>: time on x, one or more series on y, auto-scaled.
// Usage: const c = new WharfChart(canvas, [{name, color}]); c.push(timeMs, [v1, v2]); c.draw();
"use strict";

class WharfChart {
  constructor(canvas, series, maxPoints = 120) {
    this.canvas = canvas;
    this.series = series;
    this.maxPoints = maxPoints;
    this.times = [];
    this.values = series.map(() => []);
    this.drawCount = 0;
  }

  push(timeMs, values) {
    if (this.times.length && timeMs <= this.times[this.times.length - 1]) return;
    this.times.push(timeMs);
    values.forEach((v, i) => this.values[i].push(v));
    if (this.times.length > this.maxPoints) {
      this.times.shift();
      this.values.forEach((vs) => vs.shift());
    }
  }

  static niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  static label(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 10) / 10);
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (this.canvas.width !== w * ratio) { this.canvas.width = w * ratio; this.canvas.height = h * ratio; }
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 48, right = 10, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    let max = 0;
    this.values.forEach((vs) => vs.forEach((v) => { if (v > max) max = v; }));
    max = WharfChart.niceMax(max);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#e3e7eb"; g.fillStyle = "#66707c"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
      g.fillText(WharfChart.label((max * i) / 4), 4, y + 4);
    }
    const n = this.times.length;
    if (n) {
      const t0 = this.times[0], t1 = Math.max(this.times[n - 1], t0 + 1);
      const x = (t) => left + ((t - t0) / (t1 - t0)) * pw;
      const y = (v) => top + ph - (v / max) * ph;
      this.series.forEach((s, si) => {
        g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
        this.values[si].forEach((v, i) => (i ? g.lineTo(x(this.times[i]), y(v)) : g.moveTo(x(this.times[i]), y(v))));
        g.stroke();
      });
      g.fillStyle = "#66707c";
      g.fillText(new Date(t0).toLocaleTimeString(), left, h - 6);
      const end = new Date(t1).toLocaleTimeString();
      g.fillText(end, left + pw - g.measureText(end).width, h - 6);
    }
    this.drawCount += 1;
    this.canvas.dataset.points = String(n);
    this.canvas.dataset.max = String(Math.max(0, ...this.values.flat()));
  }
}

window.WharfChart = WharfChart;
