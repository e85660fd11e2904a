// Distillery console: the few live parts of its server-rendered pages. Plain JavaScript, no
// dependencies, no build; loaded from this server only (the pages' CSP allows nothing else).
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#1f77b4", "#dd8452", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf"];
  // The validation metrics worth a curve, in the report renderer's order.
  const VALIDATION_CURVES = ["accuracy", "f1", "f1_macro", "teacher_agreement", "rmse", "r2"];
  const TERMINAL = ["succeeded", "failed", "cancelled"];
  // How often the page asks while the job trains: every 0.3 s while each poll brings new points
  // (a tiny job logs one every few tens of milliseconds, and a slower poll would see its curves
  // jump straight to done), backing off to 0.75 s while none come (a long job's points are
  // seconds apart). A queued job, and a search (no curves of its own; its leaderboard moves when
  // a trial ends), are asked every 1.5 s.
  const RUNNING_POLL_MS = 300;
  const RUNNING_IDLE_POLL_MS = 750;
  const WAITING_POLL_MS = 1500;

  // The submit form shows the teacher and transfer-set fields for distill jobs only.
  const jobForm = document.getElementById("job-form");
  if (jobForm) {
    jobForm.addEventListener("change", function (event) {
      if (event.target.name === "kind") jobForm.dataset.kind = event.target.value;
    });
  }

  const root = document.getElementById("job");
  if (root) watchJob(root);

  // The report frame grows to the report's height, so the page scrolls instead of the frame.
  const frame = document.getElementById("report-frame");
  if (frame) {
    const fit = function () {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = doc.documentElement.scrollHeight + 24 + "px";
    };
    frame.addEventListener("load", function () {
      fit();
      for (const image of frame.contentDocument.images) image.addEventListener("load", fit);
    });
  }

  function watchJob(root) {
    const url = root.dataset.liveUrl;
    const isSearch = root.dataset.kind === "auto_distill";
    // One record per (kind, step); a retried attempt's later row replaces the first's.
    const records = new Map();
    const state = { after: 0, polls: 0, history: [], leaderboardRefreshes: 0 };
    window.distilleryLive = state;
    let runningDelay = RUNNING_POLL_MS;

    async function poll() {
      let body;
      try {
        const response = await fetch(url + "?after=" + state.after, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (response.status === 401) {
          window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
          return;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        body = await response.json();
      } catch (error) {
        text("job-live", "cannot reach the server (" + error.message + "); retrying");
        window.setTimeout(poll, 5000);
        return;
      }
      for (const metric of body.metrics) {
        records.set(metric.kind + ":" + metric.step, metric);
        state.after = Math.max(state.after, metric.id);
      }
      showJob(body);
      const sorted = Array.from(records.values()).sort((a, b) => a.step - b.step);
      const train = drawChart("train", lossSeries(sorted));
      const validation = drawChart("validation", validationSeries(sorted));
      if (body.search) showSearch(body.search);
      state.polls += 1;
      state.history.push({ status: body.job.status, train: train, validation: validation });
      if (body.terminal) {
        text("job-live", "");
        root.dataset.terminal = "true";
        return;
      }
      text("job-live", "live");
      if (body.job.status !== "running" || isSearch) {
        window.setTimeout(poll, WAITING_POLL_MS);
        return;
      }
      runningDelay = body.metrics.length ? RUNNING_POLL_MS : Math.min(2 * runningDelay, RUNNING_IDLE_POLL_MS);
      window.setTimeout(poll, runningDelay);
    }

    // The leaderboard is redrawn by the server (leaderboard.html) and swapped in only when the
    // poll's version says a trial or the search moved on; between swaps, running trials' progress
    // is written into their rows.
    let fetching = false;
    async function showSearch(search) {
      for (const trial of search.trials) {
        for (const cell of document.querySelectorAll('.trial-progress[data-trial="' + trial.id + '"]')) {
          cell.textContent = Math.round(100 * trial.progress) + "%";
        }
      }
      const current = document.getElementById("leaderboard-view");
      const section = document.getElementById("auto-distill");
      if (!current || !section || fetching || current.dataset.version === search.version) return;
      fetching = true;
      try {
        const response = await fetch(section.dataset.leaderboardUrl, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
          cache: "no-store",
        });
        if (!response.ok) return;
        const holder = document.createElement("template");
        holder.innerHTML = await response.text();
        const fresh = holder.content.querySelector("#leaderboard-view");
        if (!fresh) return;
        const details = current.querySelector("#candidates");
        const reopen = fresh.querySelector("#candidates");
        if (details && reopen) reopen.open = details.open;
        document.getElementById("leaderboard-view").replaceWith(fresh);
        state.leaderboardRefreshes += 1;
      } catch (error) {
        // The next poll's version still differs: it tries again.
      } finally {
        fetching = false;
      }
    }
    poll();
  }

  function text(id, value) {
    const element = document.getElementById(id);
    if (element) element.textContent = value;
  }

  function showJob(body) {
    const job = body.job;
    const badge = document.getElementById("job-status");
    badge.textContent = job.status;
    badge.className = "badge status-" + job.status;
    document.getElementById("job-progress").value = job.progress;
    text("job-progress-text", Math.round(100 * job.progress) + "%");
    text("job-eta", job.eta_seconds == null ? "" : "about " + Math.round(job.eta_seconds) + " s left");
    const phase = document.querySelector("#job-phase strong");
    if (phase && job.phase) phase.textContent = job.phase;

    const error = document.getElementById("job-error");
    if (job.error) {
      error.textContent = job.error.code + ": " + job.error.message;
      error.hidden = false;
    }
    if (job.model) {
      const link = document.getElementById("model-link");
      link.href = "/ui/models/" + job.model;
      link.textContent = job.model;
      document.getElementById("job-result").hidden = false;
    }
    if (body.report) {
      const report = document.getElementById("report-link");
      report.href = body.report;
      report.hidden = false;
    }
    const cancel = document.getElementById("cancel-form");
    cancel.hidden = TERMINAL.includes(job.status);
    if (job.cancel_requested) text("cancel-button", "Cancel requested…");

    const list = document.getElementById("events");
    list.replaceChildren(
      ...body.events.map(function (event) {
        const item = document.createElement("li");
        const time = document.createElement("time");
        time.textContent = event.at.replace("T", " ").replace(/\..*$/, "").replace(/Z$/, "") + " UTC";
        const kind = document.createElement("span");
        kind.className = "badge event-" + event.kind;
        kind.textContent = event.kind;
        item.append(time, " ", kind, " " + event.message);
        return item;
      })
    );
  }

  function isNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function series(records, kind, name) {
    const points = [];
    for (const record of records) {
      const value = record.values[name];
      if (record.kind === kind && isNumber(value)) points.push([record.step, value]);
    }
    return { name: name, points: points };
  }

  function lossSeries(records) {
    // `loss` (the weighted total) first, then each term the run logged.
    const names = new Set();
    for (const record of records) {
      if (record.kind !== "train") continue;
      for (const name of Object.keys(record.values)) if (name.endsWith("loss")) names.add(name);
    }
    const sorted = Array.from(names).sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b)));
    return sorted.map((name) => series(records, "train", name));
  }

  function validationSeries(records) {
    return VALIDATION_CURVES.map((name) => series(records, "validation", name)).filter((s) => s.points.length);
  }

  function element(name, attributes) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    return node;
  }

  function tickLabel(value) {
    const size = Math.abs(value);
    if (size >= 1000) return value.toFixed(0);
    if (size >= 10) return value.toFixed(1);
    return value.toFixed(size >= 1 ? 2 : 3);
  }

  // A line chart of `all` (each {name, points: [[step, value], ...]}) in the chart's SVG; returns
  // how many points it drew (the SVG's data-points says so too).
  function drawChart(id, all) {
    const svg = document.getElementById("chart-" + id);
    const legend = document.getElementById("legend-" + id);
    if (!svg || !legend) return 0;  // a search's page has no curves of its own
    const box = { left: 56, right: 548, top: 12, bottom: 226 };
    const points = all.flatMap((s) => s.points);
    svg.replaceChildren();
    legend.replaceChildren();
    svg.dataset.points = String(points.length);
    if (!points.length) {
      const note = element("text", { x: 280, y: 130, "text-anchor": "middle", class: "chart-note" });
      note.textContent = id === "train" ? "no training steps logged yet" : "no validations yet";
      svg.append(note);
      return 0;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.08;
    y0 -= pad; y1 += pad;
    const sx = (x) => box.left + ((x - x0) / (x1 - x0)) * (box.right - box.left);
    const sy = (y) => box.bottom - ((y - y0) / (y1 - y0)) * (box.bottom - box.top);

    for (let i = 0; i <= 4; i += 1) {
      const value = y0 + ((y1 - y0) * i) / 4;
      const y = sy(value);
      svg.append(element("line", { x1: box.left, x2: box.right, y1: y, y2: y, class: "grid" }));
      const label = element("text", { x: box.left - 6, y: y + 4, "text-anchor": "end", class: "tick" });
      label.textContent = tickLabel(value);
      svg.append(label);
    }
    // Steps are whole numbers: one label per distinct step among five evenly spaced ticks.
    const steps = new Set();
    for (let i = 0; i <= 4; i += 1) steps.add(Math.round(x0 + ((x1 - x0) * i) / 4));
    for (const step of steps) {
      const label = element("text", { x: sx(step), y: box.bottom + 16, "text-anchor": "middle", class: "tick" });
      label.textContent = String(step);
      svg.append(label);
    }
    const axis = element("text", { x: box.right, y: box.bottom + 30, "text-anchor": "end", class: "tick" });
    axis.textContent = "step";
    svg.append(axis);

    all.forEach(function (s, index) {
      const colour = COLOURS[index % COLOURS.length];
      const path = s.points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
      svg.append(element("polyline", { points: path, fill: "none", stroke: colour, "stroke-width": 2, "data-series": s.name }));
      for (const p of s.points) {
        const dot = element("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: colour });
        const title = element("title", {});
        title.textContent = s.name + " at step " + p[0] + ": " + tickLabel(p[1]);
        dot.append(title);
        svg.append(dot);
      }
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      const last = s.points[s.points.length - 1];
      item.append(swatch, s.name + " " + tickLabel(last[1]));
      legend.append(item);
    });
    return points.length;
  }
})();
