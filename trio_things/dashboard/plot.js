// A live time plot of one numeric property: the last few minutes, growing as values
// arrive, drawn with the vendored uPlot at most once per animation frame.

import uPlot from "./vendor/uPlot.esm.js";

const WINDOW_SECONDS = 300;  // what the plot shows: the last five minutes
const MIN_SPAN_SECONDS = 10;  // the narrowest the time axis gets: it widens as values come
const HEIGHT = 160;

/** A tick of the time axis: the time of day, to the second. */
function clock(seconds) {
  return seconds == null ? "" : new Date(seconds * 1000).toLocaleTimeString(undefined, {hour12: false});
}

export class LivePlot {
  /** A plot in `container` (an element already in the page). */
  constructor(container, {label, unit}) {
    this.container = container;
    this.times = [];    // seconds, the browser's clock when each value arrived
    this.values = [];   // null marks a break (the connection was lost)
    this.pending = false;
    this.container.dataset.points = "0";
    const style = getComputedStyle(document.documentElement);
    const stroke = style.getPropertyValue("--plot-line").trim() || "#1565c0";
    const grid = style.getPropertyValue("--plot-grid").trim() || "rgba(127,127,127,0.2)";
    const text = style.getPropertyValue("--fg-muted").trim() || "#666";
    const axis = {stroke: text, grid: {stroke: grid, width: 1}, ticks: {stroke: grid, width: 1}};
    this.plot = new uPlot({
      width: this.width(),
      height: HEIGHT,
      legend: {show: false},
      cursor: {drag: {x: false, y: false}},
      scales: {
        // From the first value (at least a minute back) to now, at most WINDOW_SECONDS.
        x: {time: true, range: (u, first, now) => [
          Math.max(now - WINDOW_SECONDS, Math.min(first, now - MIN_SPAN_SECONDS)), now]},
      },
      series: [
        {},
        // A property holds its value until the next change: a stepped line, not a ramp.
        {label: unit ? `${label} (${unit})` : label, stroke, width: 1.5, spanGaps: false,
         points: {show: false}, paths: uPlot.paths.stepped({align: 1})},
      ],
      axes: [{...axis, space: 70, values: (u, splits) => splits.map(clock)}, {...axis, size: 56}],
    }, [[], []], container);
    this.resizer = new ResizeObserver(() => {
      this.plot.setSize({width: this.width(), height: HEIGHT});
    });
    this.resizer.observe(container);
    this.ticker = setInterval(() => { if (this.times.length) this.schedule(); }, 1000);
  }

  width() {
    return Math.max(200, Math.floor(this.container.clientWidth || 300));
  }

  /** Add a value that arrived now. */
  add(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    const now = Date.now() / 1000;
    const last = this.times.length ? this.times[this.times.length - 1] : -Infinity;
    this.times.push(Math.max(now, last));  // sorted, as uPlot needs
    this.values.push(value);
    const oldest = now - WINDOW_SECONDS;
    let drop = 0;
    while (drop < this.times.length - 1 && this.times[drop] < oldest) drop += 1;
    if (drop) {
      this.times.splice(0, drop);
      this.values.splice(0, drop);
    }
    this.schedule();
  }

  /** A break in the line (the connection was lost): no line across the gap. */
  gap() {
    if (!this.values.length || this.values[this.values.length - 1] === null) return;
    this.times.push(Math.max(Date.now() / 1000, this.times[this.times.length - 1]));
    this.values.push(null);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const times = this.times.slice();
    const values = this.values.slice();
    const last = values[values.length - 1];
    if (last !== null && last !== undefined) {  // the value holds until now
      times.push(Math.max(Date.now() / 1000, times[times.length - 1]));
      values.push(last);
    }
    this.plot.setData([times, values]);
    this.container.dataset.points = String(this.values.filter((v) => v !== null).length);
  }

  destroy() {
    clearInterval(this.ticker);
    this.resizer.disconnect();
    this.plot.destroy();
  }
}
