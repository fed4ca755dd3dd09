// A small line chart on a <canvas>: time on x, one or more series on y.
// Usage: const c = new WharfChart(canvas, [{name, color}]); c.push(timeMs, [v1, v2]); c.draw();
//
// The chart shows a fixed time window ending at the newest sample (two minutes by default) and
// keeps nothing older. The y-scale is recomputed from the samples in that window on every draw,
// so a spike sets the scale only while it is on screen: once it scrolls out, steady traffic is
// drawn at a readable height again. The top of the scale is rounded up to a whole number of
// "nice" steps (1, 2, 2.5 or 5 times a power of ten) and never goes below `minTop`, so an
// all-zero window still has a scale and every grid line's label is the exact value it marks.
// A series of counts (`integer: true`) gets whole steps only.
"use strict";

class WharfChart {
  constructor(canvas, series, { windowMs = 120_000, minTop = 1, integer = false } = {}) {
    this.canvas = canvas;
    this.series = series;
    this.windowMs = windowMs;
    this.minTop = minTop;
    this.integer = integer;
    this.times = [];
    this.values = series.map(() => []);
    this.drawCount = 0;
  }

  push(timeMs, values) {
    const n = this.times.length;
    if (n && timeMs <= this.times[n - 1]) return;
    this.times.push(timeMs);
    values.forEach((v, i) => this.values[i].push(v));
    // drop what has left the window (also what preceded a gap longer than the window)
    let old = 0;
    while (this.times[old] < timeMs - this.windowMs) old++;
    if (old) {
      this.times.splice(0, old);
      this.values.forEach((vs) => vs.splice(0, old));
    }
  }

  // The largest value in the window (0 when it is empty).
  visibleMax() {
    let max = 0;
    for (const vs of this.values) for (const v of vs) if (Number.isFinite(v) && v > max) max = v;
    return max;
  }

  // Grid values from 0 up to a top that covers `max`: at most `intervals` equal nice steps.
  static scale(max, { minTop = 1, integer = false, intervals = 4 } = {}) {
    const span = Math.max(max, minTop) || 1;
    const rough = span / intervals;
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    let step = 10 * power;
    for (const m of [1, 2, 2.5, 5]) {
      if (integer && !Number.isInteger(m * power)) continue;
      if (m * power >= rough * (1 - 1e-9)) { step = m * power; break; }
    }
    const count = Math.max(1, Math.ceil(span / step - 1e-9));
    // toPrecision trims the binary noise of step * i (0.1 * 3 is 0.30000000000000004)
    const ticks = Array.from({ length: count + 1 }, (_, i) => Number((step * i).toPrecision(12)));
    return { top: ticks[count], ticks };
  }

  // A grid value as the axis shows it: exact (no rounding beyond six significant digits).
  static label(v) {
    for (const [unit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (v >= unit) return String(Number((v / unit).toPrecision(6))) + suffix;
    }
    return String(Number(v.toPrecision(6)));
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (this.canvas.width !== w * ratio) { this.canvas.width = w * ratio; this.canvas.height = h * ratio; }
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 52, right = 10, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    const max = this.visibleMax();
    const { top: scaleTop, ticks } = WharfChart.scale(max, { minTop: this.minTop, integer: this.integer });
    const y = (v) => top + ph - (v / scaleTop) * ph;
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#e3e7eb"; g.fillStyle = "#66707c"; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (const tick of ticks) {
      const ty = y(tick);
      g.beginPath(); g.moveTo(left, ty); g.lineTo(left + pw, ty); g.stroke();
      g.fillText(WharfChart.label(tick), left - 6, ty);
    }
    const n = this.times.length;
    if (n) {
      const t1 = this.times[n - 1], t0 = t1 - this.windowMs;
      const x = (t) => left + ((t - t0) / (t1 - t0)) * pw;
      this.series.forEach((s, si) => {
        g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
        this.values[si].forEach((v, i) => (i ? g.lineTo(x(this.times[i]), y(v)) : g.moveTo(x(this.times[i]), y(v))));
        g.stroke();
      });
      g.fillStyle = "#66707c"; g.textBaseline = "alphabetic";
      g.textAlign = "left";
      g.fillText(new Date(t0).toLocaleTimeString(), left, h - 6);
      g.textAlign = "right";
      g.fillText(new Date(t1).toLocaleTimeString(), left + pw, h - 6);
    }
    this.drawCount += 1;
    this.canvas.dataset.points = String(n);
    this.canvas.dataset.max = String(max);
    this.canvas.dataset.top = String(scaleTop);
  }
}

window.WharfChart = WharfChart;
