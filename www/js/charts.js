// Live learning curves: a thin wrapper over uPlot (www/vendor, from npm) for series that grow
// as training reports in. X is the epoch (fractional between evaluations), fixed from 0 to the
// number of epochs so the curve grows left to right instead of rescaling.
import './usable-locale.js'; // before uPlot, which formats numbers in navigator.language as it loads
import uPlot from '../vendor/uPlot.esm.js';

const HEIGHT = 220;

export class LearningChart {
  /**
   * `series`: `[{ label, stroke, dash?, points? }]`; `format` turns a y value into text
   * (axis ticks and legend); `yRange` fixes the y axis (e.g. `[0, 1]` for accuracy).
   */
  constructor(container, { title, series, format = (v) => v.toFixed(3), yRange }) {
    this.container = container;
    this.seriesCount = series.length;
    this.maxX = 1;
    this.data = [[], ...series.map(() => [])];
    const show = (v) => (v == null ? '–' : format(v));
    this.plot = new uPlot({
      title,
      width: this.width(),
      height: HEIGHT,
      scales: {
        x: { time: false, range: () => [0, this.maxX] },
        y: yRange ? { range: () => yRange } : { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.05 : 1] },
      },
      axes: [
        { label: 'epoch', size: 40 },
        { values: (u, ticks) => ticks.map(format), size: 50 },
      ],
      series: [
        { label: 'epoch', value: (u, v) => (v == null ? '–' : v.toFixed(2)) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: Boolean(s.points), size: 6, fill: s.stroke },
          value: (u, v) => show(v),
        })),
      ],
      cursor: { drag: { x: false, y: false } },
    }, this.data, container);
    new ResizeObserver(() => this.scheduleResize()).observe(container);
  }

  // Resizing the plot inside the ResizeObserver's callback would change the layout that the
  // observer is reporting on, and the browser would report an error ("ResizeObserver loop
  // completed with undelivered notifications"): the resize waits for the next frame, and only
  // happens when the width did change.
  scheduleResize() {
    if (this.resizePending) return;
    this.resizePending = true;
    requestAnimationFrame(() => {
      this.resizePending = false;
      const width = this.width();
      if (width !== this.plot.width) this.plot.setSize({ width, height: HEIGHT });
    });
  }

  width() {
    return Math.max(240, this.container.clientWidth);
  }

  /** Empties the chart for a run of `epochs` epochs. */
  reset(epochs) {
    this.maxX = Math.max(1, epochs);
    this.data = [[], ...Array.from({ length: this.seriesCount }, () => [])];
    this.scheduleRedraw();
  }

  /** Adds a point at epoch `x`; `values` has one entry per series, `null` where it has none. */
  add(x, values) {
    const [xs, ...ys] = this.data;
    const last = xs.length - 1;
    if (last >= 0 && xs[last] === x) {
      values.forEach((value, i) => { if (value != null) ys[i][last] = value; });
    } else {
      xs.push(x);
      values.forEach((value, i) => ys[i].push(value ?? null));
    }
    this.scheduleRedraw();
  }

  // Progress arrives several times a second: redraw at most once per frame.
  scheduleRedraw() {
    if (this.redrawPending) return;
    this.redrawPending = true;
    requestAnimationFrame(() => {
      this.redrawPending = false;
      this.redraw();
    });
  }

  redraw() {
    this.plot.setData(this.data);
    // How many points are drawn, for the end-to-end test and anyone inspecting the page.
    this.container.dataset.points = String(this.data[0].length);
  }
}
