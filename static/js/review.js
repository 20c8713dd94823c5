// Review screen: a visit's images with their findings drawn as an SVG overlay, the dentist's
// decisions (confirm, reject with a reason, adjust the box, add a missed finding), signing and
// amendments. Starts from the JSON blob #review-data (rendered by the server, never executed) and
// talks to the API with the session cookie and the CSRF token. No inline scripts (CSP).
(function () {
  "use strict";
  const root = document.getElementById("review");
  const blob = document.getElementById("review-data");
  if (!root || !blob) return;

  const SVG_NS = "http://www.w3.org/2000/svg";
  const csrf = root.dataset.csrf;
  // Colours per condition come from the server (core.conditions, Okabe-Ito, the
  // colour-blind-safe palette), so the screen, the HTML report and the PDF agree; labels name the condition too.
  // Status re-checks while analyses run: 2 s at first, then 1.5x longer each time up to 15 s; none while
  // the tab is hidden. Each check is an audited read, so a tab left open must not write one every 2 s.
  const POLL_MS = 2000;
  const POLL_MAX_MS = 15000;

  const imagesEl = document.getElementById("review-images");
  const messageEl = document.getElementById("review-message");
  const liveEl = document.getElementById("live-status");
  const overlayToggle = document.getElementById("overlay-toggle");
  const slider = document.getElementById("threshold-slider");
  const sliderValue = document.getElementById("threshold-value");
  const thresholdSummary = document.getElementById("threshold-summary");
  const showRejected = document.getElementById("show-rejected");
  const heatmapToggle = document.getElementById("heatmap-toggle");
  const conditionToggles = document.getElementById("condition-toggles");
  const signButton = document.getElementById("sign-button");
  const pendingCount = document.getElementById("pending-count");
  const amendForm = document.getElementById("amend-form");
  const noteForm = document.getElementById("visit-note-form");
  const actionsTemplate = document.getElementById("finding-actions-template");
  const toolsTemplate = document.getElementById("image-tools-template");

  let data = JSON.parse(blob.textContent);
  const state = {
    overlay: true,
    minimum: 0,
    showRejected: false,
    selected: null, // finding id
    draw: null, // {mode: "add"|"adjust", imageId, findingId, box, drag, changed}
    current: null, // image id of the viewer last used (the keyboard's zoom and pan act on it)
    hiddenConditions: {}, // condition -> hidden from the overlay
    heatmap: false, // the photo model's heatmaps as a second overlay
    busy: false,
    pollTimer: null,
    polling: false, // a status check is scheduled or running
    pollPaused: false, // polling waits for the tab to be shown again
    pollResume: null,
    reasons: {}, // finding id -> reject reason chosen but not sent yet (kept when the lists are rebuilt)
    drafts: {}, // finding id -> {tooth, surfaces, note} typed but not saved (kept when the lists are rebuilt)
    open: {}, // finding id -> its edit panel is open
  };
  const views = {}; // image id -> {section, stage, svg, list, hidden, draft, tools}

  // ---------------------------------------------------------------- helpers
  const percentLabel = (p) => Math.round(p * 100) + "%";
  const colorOf = (condition) => data.colours.conditions[condition] || data.colours.fallback;
  const human = (name) => (data.condition_names || {})[name] || String(name || "").replace(/_/g, " ");
  const reasonLabel = (code) => {
    const found = (data.reject_reasons || []).find((r) => r[0] === code);
    return found ? found[1] : human(code || "no reason");
  };
  const canReview = () => !!data.can_review && !data.locked;
  const canAdd = () => !!data.can_add && !data.locked;
  const toothInfo = (fdi) => (data.teeth || {})[fdi] || null;
  const toothLabel = (fdi) => (toothInfo(fdi) ? toothInfo(fdi).label : fdi);
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);

  // The tooth typed in the clinic's notation (or its Palmer grid form) as its FDI code; null when it is none.
  function parseTooth(text) {
    const value = String(text || "").replace(/\s+/g, "").toUpperCase();
    if (!value) return "";
    const digits = /^\d+$/.test(value) ? String(Number(value)) : value;
    for (const [fdi, info] of Object.entries(data.teeth || {})) {
      if (info.label.toUpperCase() === digits || info.label.toUpperCase() === value) return fdi;
      if (data.tooth_notation === "palmer" && info.grid.toUpperCase() === value) return fdi;
    }
    return null;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (v === null || v === undefined || v === false) return;
      if (k === "className") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }

  function showMessage(text, kind) {
    messageEl.textContent = text;
    messageEl.className = "review-message " + (kind || "ok");
    messageEl.hidden = !text;
  }

  function errorText(error, response) {
    let text = error.message || (response.status + " " + response.statusText);
    const details = error.details;
    if (details && typeof details === "object") {
      const parts = Object.entries(details).map(([field, problems]) =>
        field + ": " + (Array.isArray(problems) ? problems.join(" ") : String(problems)));
      if (parts.length) text += " (" + parts.join("; ") + ")";
    }
    return text;
  }

  async function api(url, method, body, version) {
    const init = {
      method: method, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Accept": "application/json" },
    };
    // The version the change was made on: a stale one answers 412 instead of overwriting someone else's change.
    if (version !== undefined && version !== null) init.headers["If-Match"] = '"' + version + '"';
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new Error("The server could not be reached: " + err.message);
    }
    const payload = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = payload.error || {};
      const failure = new Error(error.code === "version_conflict" ? error.message : errorText(error, response));
      failure.status = response.status;
      failure.code = error.code;
      throw failure;
    }
    return payload;
  }

  async function run(action) {
    if (state.busy) return;
    state.busy = true;
    root.classList.add("busy");
    try {
      await action();
    } catch (err) {
      showMessage(err.message, "error");
      if (err.code === "version_conflict") {
        // Someone else changed it: show theirs (what this person typed stays in the fields to apply again).
        state.busy = false;
        await reloadData();
        showMessage(err.message, "error");
      }
    } finally {
      state.busy = false;
      root.classList.remove("busy");
    }
  }

  // ---------------------------------------------------------------- which findings show
  function thresholdOf(finding, image) {
    if (typeof finding.threshold === "number") return finding.threshold;
    const limits = (data.thresholds || {})[image.modality] || {};
    return typeof limits[finding.condition] === "number" ? limits[finding.condition] : 0.5;
  }

  function isPendingSuggestion(finding) {
    return finding.status === "pending" && finding.source === "model";
  }

  function isVisible(finding, image) {
    if (finding.status === "rejected") return state.showRejected;
    if (isPendingSuggestion(finding)) {
      const p = finding.probability === null ? 0 : finding.probability;
      return p >= Math.max(thresholdOf(finding, image), state.minimum);
    }
    return true;
  }

  function visibleFindings() {
    const all = [];
    data.images.forEach((image) => image.findings.forEach((finding) => {
      if (isVisible(finding, image)) all.push({ finding: finding, image: image });
    }));
    return all;
  }

  function locate(findingId) {
    for (const image of data.images) {
      const finding = image.findings.find((f) => f.id === findingId);
      if (finding) return { finding: finding, image: image };
    }
    return null;
  }

  function labelOf(finding) {
    let text = human(finding.condition);
    if (finding.probability !== null && finding.probability !== undefined) text += " " + percentLabel(finding.probability);
    if (finding.source === "clinician") text = "+ " + text;
    return text;
  }

  function statusText(finding) {
    if (finding.status === "pending") return "AI suggestion · needs a decision";
    const who = finding.reviewed_by ? " by " + finding.reviewed_by : "";
    if (finding.status === "rejected") return "Rejected (" + reasonLabel(finding.reason) + ")" + who;
    if (finding.source === "clinician") return "Added" + who;
    return "Confirmed" + who;
  }

  // ---------------------------------------------------------------- building the page
  function build() {
    imagesEl.textContent = "";
    buildConditionToggles();
    Object.values(views).forEach((view) => { if (view.viewer) view.viewer.osd.destroy(); });
    Object.keys(views).forEach((k) => delete views[k]);
    if (observer) observer.disconnect();
    if (!data.images.length) {
      imagesEl.appendChild(el("p", { className: "muted" }, "This visit has no images."));
      return;
    }
    data.images.forEach((image, index) => {
      const section = el("section", { className: "review-image card", "data-image-id": image.id });
      const title = el("h2", {}, image.modality_label + " " + (index + 1));
      title.appendChild(el("small", {}, " " + image.width + "×" + image.height +
        (image.bit_depth === 16 ? " · 16-bit" : "")));
      const analysis = el("p", { className: "analysis-status muted" });
      section.append(title, analysis);

      let tools = null;
      if (toolsTemplate && data.can_add) {
        tools = toolsTemplate.content.firstElementChild.cloneNode(true);
        const select = tools.querySelector("[data-role=condition]");
        (data.conditions[image.modality] || []).forEach((c) => select.appendChild(el("option", { value: c }, human(c))));
        tools.querySelector("[data-action=add]").addEventListener("click", () => startDraw("add", image.id, null));
        section.appendChild(tools);
      }

      const draft = el("div", { className: "draft-controls", hidden: true });
      const draftHint = el("span", { className: "draft-hint", role: "status" });
      const save = el("button", { type: "button", className: "primary" }, "Save");
      const cancel = el("button", { type: "button" }, "Cancel");
      save.addEventListener("click", saveDraw);
      cancel.addEventListener("click", cancelDraw);
      draft.append(draftHint, save, cancel);
      section.appendChild(draft);

      const body = el("div", { className: "review-body" });
      const stage = el("div", { className: "stage" });
      const frame = el("div", { className: "viewer-frame" });
      const viewerTools = viewerToolbar(image, index);
      const pair = el("div", { className: "viewer-pair" });
      const viewerEl = el("div", { className: "viewer", "data-image-id": image.id });
      viewerEl.style.aspectRatio = image.width + " / " + image.height;
      const svg = svgEl("svg", { class: "overlay", role: "img",
        "aria-label": "Findings drawn on " + image.modality_label + " " + (index + 1) });
      const current = el("figure", { className: "viewer-current" });
      current.append(viewerEl);
      if (previousOf(image)) current.appendChild(el("figcaption", {}, "This visit, " + data.visit.date));
      pair.appendChild(current);
      const previous = previousPane(image);
      if (previous) pair.appendChild(previous);
      frame.append(viewerTools.element, pair);
      stage.appendChild(frame);

      const side = el("div", { className: "finding-side" });
      const list = el("ol", { className: "finding-list", "aria-label": "Findings of this image" });
      const hidden = el("p", { className: "muted hidden-count" });
      side.append(list, hidden);
      body.append(stage, side);
      section.appendChild(body);
      imagesEl.appendChild(section);
      views[image.id] = { section, stage, frame, viewerEl, svg, list, hidden, draft, draftHint, save, tools, analysis,
        controls: viewerTools, viewer: null, heat: null, heatKey: null };
      if (observer) observer.observe(viewerEl);
      else createViewer(image.id);
    });
  }

  // Viewers are made when their image comes near the screen: a visit of 15 images opens with the first ones only.
  const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    entries.forEach((entry) => {
      if (!entry.isIntersecting) return;
      observer.unobserve(entry.target);
      createViewer(entry.target.dataset.imageId);
    });
  }, { rootMargin: "400px 0px" }) : null;

  function createViewer(imageId) {
    const view = views[imageId];
    const image = data.images.find((i) => i.id === imageId);
    if (!view || !image || view.viewer || !window.DentalViewer) return;
    view.viewer = window.DentalViewer.create(view.viewerEl, image, {
      drawn: () => {
        drawOverlay(image, view);
        markInteractive();
      },
      viewport: () => drawOverlay(image, view),
    });
    view.viewerEl.appendChild(view.svg);
    view.viewerEl.dentalViewer = view.viewer; // read by the browser tests (zoom, pan, canvas pixels)
    attachDrawing(view, image.id);
    view.viewer.osd.addHandler("canvas-press", () => {
      state.current = imageId;
      view.viewer.osd.canvas.focus({ preventScroll: true }); // the arrow keys pan this image from now on
    });
  }

  // performance.mark("review-interactive"): the first image is drawn and the decision buttons are enabled
  // (bench/bench_review_page.py reads it).
  let interactiveMarked = false;
  function markInteractive() {
    if (interactiveMarked) return;
    const firstDrawn = data.images.length && views[data.images[0].id] && views[data.images[0].id].viewer &&
      views[data.images[0].id].viewer.drawn;
    const decisions = !data.can_review || data.locked ||
      !!imagesEl.querySelector("li.finding [data-action=confirm]:not(:disabled)") ||
      !imagesEl.querySelector("li.finding.pending");
    if (!firstDrawn || !decisions) return;
    interactiveMarked = true;
    root.dataset.interactive = "true";
    if (window.performance && performance.mark) performance.mark("review-interactive");
  }

  function viewerToolbar(image, index) {
    const bar = el("div", { className: "viewer-tools", role: "toolbar",
      "aria-label": "Viewer of " + image.modality_label + " " + (index + 1) });
    const button = (action, text, label, key) => {
      const b = el("button", { type: "button", "data-action": action, "aria-label": label,
        title: label + (key ? " (" + key + ")" : "") }, text);
      b.addEventListener("click", () => { state.current = image.id; viewerAction(image.id, action); });
      bar.appendChild(b);
      return b;
    };
    button("zoom-in", "+", "Zoom in", "+");
    button("zoom-out", "−", "Zoom out", "-");
    button("fit", "Fit", "Fit the image", "0");
    button("full-screen", "Full screen", "Full screen", "f");
    const range = (role, text, min, max, value, step) => {
      const id = "v-" + image.id.slice(0, 8) + "-" + role;
      const label = el("label", { for: id }, text);
      const input = el("input", { type: "range", id: id, min: String(min), max: String(max), step: String(step || 1),
        value: String(value), "data-role": role });
      const out = el("output", { for: id }, String(value));
      input.addEventListener("input", () => { state.current = image.id; out.textContent = input.value; adjust(image.id); });
      const wrap = el("span", { className: "viewer-range" });
      wrap.append(label, input, out);
      bar.appendChild(wrap);
      return input;
    };
    const controls = { element: bar };
    controls.brightness = range("brightness", "Brightness", -100, 100, 0);
    controls.contrast = range("contrast", "Contrast", -100, 100, 0);
    const invertId = "v-" + image.id.slice(0, 8) + "-invert";
    controls.invert = el("input", { type: "checkbox", id: invertId, "data-role": "invert" });
    controls.invert.addEventListener("change", () => { state.current = image.id; adjust(image.id); });
    const invertLabel = el("label", { for: invertId, className: "viewer-check" });
    invertLabel.append(controls.invert, " Invert");
    bar.appendChild(invertLabel);
    if (image.pixels_url && image.window) {
      // window/level in the X-ray's own 16-bit values (level: the window's centre; width: its span)
      const [low, high] = image.window;
      controls.level = range("level", "Level", 0, 65535, Math.round((low + high) / 2));
      controls.width = range("width", "Window", 1, 65535, Math.max(1, high - low));
    }
    button("reset", "Reset", "Reset brightness, contrast, invert and window", "");
    return controls;
  }

  function adjust(imageId) {
    const view = views[imageId];
    if (!view || !view.viewer) return;
    const c = view.controls;
    const changes = { brightness: Number(c.brightness.value), contrast: Number(c.contrast.value),
      invert: c.invert.checked };
    if (c.level) {
      const level = Number(c.level.value);
      const width = Number(c.width.value);
      changes.window = [Math.round(level - width / 2), Math.round(level + width / 2)];
    }
    view.viewer.apply(changes);
  }

  function viewerAction(imageId, action) {
    const view = views[imageId];
    if (!view || !view.viewer) return;
    const viewer = view.viewer;
    if (action === "zoom-in") viewer.zoomBy(1.5);
    else if (action === "zoom-out") viewer.zoomBy(1 / 1.5);
    else if (action === "fit") viewer.fit();
    else if (action === "full-screen") {
      if (document.fullscreenElement) document.exitFullscreen();
      else if (view.frame.requestFullscreen) view.frame.requestFullscreen();
    } else if (action === "invert") {
      view.controls.invert.checked = !view.controls.invert.checked;
      adjust(imageId);
    } else if (action === "reset") {
      const c = view.controls;
      [c.brightness, c.contrast].forEach((input) => { input.value = "0"; input.nextElementSibling.textContent = "0"; });
      c.invert.checked = false;
      const image = data.images.find((i) => i.id === imageId);
      if (c.level && image.window) {
        c.level.value = String(Math.round((image.window[0] + image.window[1]) / 2));
        c.width.value = String(Math.max(1, image.window[1] - image.window[0]));
        c.level.nextElementSibling.textContent = c.level.value;
        c.width.nextElementSibling.textContent = c.width.value;
      }
      adjust(imageId);
    }
  }

  function currentImageId() {
    if (state.draw) return state.draw.imageId;
    const selected = state.selected && locate(state.selected);
    if (selected) return selected.image.id;
    if (state.current && views[state.current]) return state.current;
    return data.images.length ? data.images[0].id : null;
  }

  // ---------------------------------------------------------------- the previous signed visit
  function previousOf(image) {
    return data.previous && data.previous.matches ? data.previous.matches[image.id] || null : null;
  }

  function previousPane(image) {
    const prior = previousOf(image);
    if (!prior) return null;
    const figure = el("figure", { className: "viewer-previous", "data-testid": "previous-visit" });
    const frame = el("div", { className: "previous-image" });
    frame.style.aspectRatio = prior.width + " / " + prior.height;
    const img = el("img", { src: prior.preview_url, alt: "Image " + prior.number + " of the previous visit, " +
      data.previous.date, loading: "lazy", draggable: "false" });
    const svg = svgEl("svg", { class: "overlay previous-overlay", "aria-hidden": "true", viewBox: "0 0 100 100",
      preserveAspectRatio: "none" });
    prior.findings.forEach((f) => {
      if (!f.box) return;
      const [x, y, w, h] = f.box;
      svg.appendChild(svgEl("rect", { class: "prior-box", x: x * 100, y: y * 100, width: w * 100, height: h * 100,
        stroke: colorOf(f.condition), "vector-effect": "non-scaling-stroke" }));
    });
    frame.append(img, svg);
    const caption = el("figcaption");
    const link = el("a", { href: data.previous.review_url }, "Previous visit, " + data.previous.date);
    caption.append(link, " (signed version " + data.previous.version + " by " + data.previous.signed_by + ")");
    const teethList = el("ul", { className: "previous-teeth" });
    prior.teeth.forEach((t) => {
      const parts = [];
      if (t.problems.length) parts.push(t.problems.join(", "));
      if (t.status.length) parts.push("status: " + t.status.join(", "));
      teethList.appendChild(el("li", {}, t.heading + ": " + parts.join("; ")));
    });
    if (prior.unassigned.length) teethList.appendChild(el("li", {}, "No tooth: " + prior.unassigned.join(", ")));
    if (!teethList.children.length) teethList.appendChild(el("li", {}, "No findings."));
    figure.append(frame, caption, teethList);
    return figure;
  }

  function refresh() {
    root.classList.toggle("overlay-off", !state.overlay);
    const shown = visibleFindings();
    if (state.selected && !shown.some((x) => x.finding.id === state.selected)) state.selected = null;
    data.images.forEach((image) => {
      const view = views[image.id];
      if (!view) return;
      drawOverlay(image, view);
      drawList(image, view);
      drawAnalysis(image, view);
      if (view.tools) view.tools.querySelectorAll("button, select").forEach((c) => { c.disabled = !canAdd(); });
    });
    applyLock();
    summarise();
    markInteractive();
  }

  // ---------------------------------------------------------------- the overlay: boxes, labels, heatmap
  const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
  const measure = document.createElement("canvas").getContext("2d");
  const LABEL_FONT = "700 13px system-ui, sans-serif";
  const LABEL_H = 20;

  function textWidth(text) {
    measure.font = LABEL_FONT;
    return Math.ceil(measure.measureText(text).width);
  }

  function onOverlay(finding) {
    return !state.hiddenConditions[finding.condition];
  }

  // Labels never overlap: each goes to the first free place of (above, below, inside top, then further down),
  // the selected finding first, then by probability.
  function placeLabels(items, width, height) {
    const placed = [];
    const overlaps = (r) => placed.some((p) => r.x < p.x + p.w && p.x < r.x + r.w && r.y < p.y + p.h && p.y < r.y + r.h);
    const clampX = (x, w) => Math.max(0, Math.min(x, width - w));
    items.forEach((item) => {
      const w = textWidth(item.text) + 14;
      const r = item.rect;
      const candidates = [
        { x: r.x, y: r.y - LABEL_H - 2 }, { x: r.x, y: r.y + r.h + 2 }, { x: r.x + 2, y: r.y + 2 },
        { x: r.x + r.w - w, y: r.y - LABEL_H - 2 }, { x: r.x + r.w - w, y: r.y + r.h + 2 },
      ];
      for (let step = 1; step < 40; step += 1) candidates.push({ x: r.x, y: r.y + r.h + 2 + step * (LABEL_H + 2) });
      for (let step = 1; step < 40; step += 1) candidates.push({ x: r.x, y: r.y - LABEL_H - 2 - step * (LABEL_H + 2) });
      item.label = null;
      for (const c of candidates) {
        const rect = { x: clampX(c.x, w), y: c.y, w: w, h: LABEL_H };
        if (rect.y < 0 || rect.y + rect.h > height) continue;
        if (overlaps(rect)) continue;
        placed.push(rect);
        item.label = rect;
        break;
      }
    });
    return items;
  }

  function drawOverlay(image, view) {
    const svg = view.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const viewer = view.viewer;
    if (!viewer || !viewer.item()) return;
    drawHeatmap(image, view);
    const width = view.viewerEl.clientWidth;
    const height = view.viewerEl.clientHeight;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    const toRect = (box) => {
      const a = viewer.toScreen(box[0], box[1]);
      const b = viewer.toScreen(box[0] + box[2], box[1] + box[3]);
      return { x: a.x, y: a.y, w: b.x - a.x, h: b.y - a.y };
    };
    const drawing = state.draw && state.draw.imageId === image.id ? state.draw : null;
    if (drawing) {
      // catches the drag of a new box (add, or a fresh box for the finding being adjusted)
      svg.appendChild(svgEl("rect", { class: "capture", x: 0, y: 0, width: width, height: height }));
    }
    const items = [];
    image.findings.forEach((finding) => {
      if (!finding.box || !isVisible(finding, image) || !onOverlay(finding)) return;
      const editing = drawing && drawing.mode === "adjust" && drawing.findingId === finding.id;
      const box = editing && drawing.box ? drawing.box : finding.box;
      items.push({ finding: finding, rect: toRect(box), editing: editing,
        text: labelOf(finding) + (finding.status === "rejected" ? " (rejected)" : "") });
    });
    items.sort((a, b) => (b.finding.id === state.selected) - (a.finding.id === state.selected) ||
      (b.finding.probability || 0) - (a.finding.probability || 0));
    placeLabels(items, width, height);
    const labels = svgEl("g", { class: "labels" });
    items.slice().reverse().forEach((item) => {
      const finding = item.finding;
      const r = item.rect;
      const color = colorOf(finding.condition);
      const kind = finding.source === "clinician" ? "added" : finding.status;
      const group = svgEl("g", { class: "box " + kind + (finding.id === state.selected ? " selected" : "") +
        (item.editing ? " editing" : ""), "data-id": finding.id });
      const geometry = { x: r.x, y: r.y, width: Math.max(r.w, 1), height: Math.max(r.h, 1) };
      // dark edge, white halo, coloured line and a light fill of the colour: readable on dark and light images
      group.appendChild(svgEl("rect", Object.assign({ class: "shade" }, geometry)));
      group.appendChild(svgEl("rect", Object.assign({ class: "halo" }, geometry)));
      group.appendChild(svgEl("rect", Object.assign({ class: "outline", stroke: color, fill: color }, geometry)));
      if (finding.source === "clinician") {
        [[r.x, r.y], [r.x + r.w, r.y], [r.x, r.y + r.h], [r.x + r.w, r.y + r.h]].forEach(([cx, cy]) => {
          group.appendChild(svgEl("circle", { class: "marker", cx: cx, cy: cy, r: "5", fill: color }));
        });
      }
      if (item.editing) {
        group.appendChild(svgEl("rect", Object.assign({ class: "mover", "data-handle": "move" }, geometry)));
        handlePoints(r).forEach(([name, hx, hy]) => {
          group.appendChild(svgEl("rect", { class: "handle", "data-handle": name, x: hx - 7, y: hy - 7, width: 14,
            height: 14 }));
        });
      }
      group.addEventListener("click", () => { if (!state.draw) select(finding.id, false); });
      svg.appendChild(group);
      if (item.label) {
        const l = item.label;
        const tag = svgEl("g", { class: "label-tag", "data-id": finding.id });
        tag.appendChild(svgEl("rect", { class: "label-plate", x: l.x, y: l.y, width: l.w, height: l.h, rx: 3 }));
        tag.appendChild(svgEl("rect", { class: "label-key", x: l.x, y: l.y, width: 5, height: l.h, fill: color }));
        const text = svgEl("text", { class: "label", x: l.x + 9, y: l.y + 14 });
        text.textContent = item.text;
        tag.appendChild(text);
        tag.addEventListener("click", () => { if (!state.draw) select(finding.id, false); });
        labels.appendChild(tag);
      }
    });
    svg.appendChild(labels);
    if (drawing && drawing.mode === "add" && drawing.box) {
      const r = toRect(drawing.box);
      svg.appendChild(svgEl("rect", { class: "draft", x: r.x, y: r.y, width: r.w, height: r.h }));
    }
  }

  function handlePoints(r) {
    const mx = r.x + r.w / 2;
    const my = r.y + r.h / 2;
    const points = { nw: [r.x, r.y], n: [mx, r.y], ne: [r.x + r.w, r.y], e: [r.x + r.w, my],
      se: [r.x + r.w, r.y + r.h], s: [mx, r.y + r.h], sw: [r.x, r.y + r.h], w: [r.x, my] };
    return HANDLES.map((name) => [name, points[name][0], points[name][1]]);
  }

  // The photo model's heatmaps (one per finding, over the whole image) as a second overlay: the strongest value
  // of the findings shown, yellow to red, transparent where the model saw nothing; OpenSeadragon keeps it on the image.
  function drawHeatmap(image, view) {
    const shown = state.heatmap && state.overlay ? image.findings.filter((f) => f.heatmap && isVisible(f, image) &&
      onOverlay(f)) : [];
    const key = shown.map((f) => f.id).join(",");
    if (key === view.heatKey) return;
    view.heatKey = key;
    const osd = view.viewer.osd;
    if (view.heat) { osd.removeOverlay(view.heat); view.heat = null; }
    if (!shown.length) return;
    const rows = shown[0].heatmap.rows;
    const cols = shown[0].heatmap.cols;
    const strongest = new Uint8Array(rows * cols);
    shown.forEach((f) => {
      if (f.heatmap.rows !== rows || f.heatmap.cols !== cols) return;
      const bytes = atob(f.heatmap.data);
      for (let i = 0; i < strongest.length; i += 1) strongest[i] = Math.max(strongest[i], bytes.charCodeAt(i));
    });
    const canvas = el("canvas", { className: "heatmap", width: cols, height: rows, "aria-hidden": "true" });
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(cols, rows);
    for (let i = 0; i < strongest.length; i += 1) {
      const v = strongest[i] / 255;
      pixels.data[i * 4] = 255;
      pixels.data[i * 4 + 1] = Math.round(230 * (1 - v));
      pixels.data[i * 4 + 2] = 0;
      pixels.data[i * 4 + 3] = v < 0.15 ? 0 : Math.round(60 + 140 * v);
    }
    ctx.putImageData(pixels, 0, 0);
    view.heat = canvas;
    osd.addOverlay({ element: canvas, location: new window.OpenSeadragon.Rect(0, 0, 1, image.height / image.width) });
  }

  function drawList(image, view) {
    const list = view.list;
    list.textContent = "";
    let hiddenPending = 0;
    image.findings.forEach((finding) => {
      if (!isVisible(finding, image)) {
        if (isPendingSuggestion(finding)) hiddenPending += 1;
        return;
      }
      const item = el("li", { className: "finding " + finding.status + (finding.source === "clinician" ? " added" : ""),
        "data-id": finding.id });
      if (finding.id === state.selected) item.setAttribute("aria-current", "true");
      const head = el("button", { type: "button", className: "finding-select" });
      const swatch = el("span", { className: "swatch " + (finding.source === "clinician" ? "added" : finding.status),
        "aria-hidden": "true" });
      swatch.style.borderColor = colorOf(finding.condition);
      const toothText = finding.tooth
        ? "Tooth " + toothLabel(finding.tooth) + (finding.surfaces ? " · " + finding.surfaces : "")
        : "No tooth";
      const status = el("span", { className: "finding-status" }, statusText(finding));
      status.appendChild(el("span", { className: "tooth-tag" + (finding.tooth ? "" : " none") }, " · " + toothText));
      if (finding.note) status.appendChild(el("span", { className: "note-tag" }, " · note"));
      head.append(swatch, el("strong", {}, labelOf(finding)), status);
      head.addEventListener("click", () => select(finding.id, false));
      item.appendChild(head);
      if (actionsTemplate && data.can_review) {
        const actions = actionsTemplate.content.firstElementChild.cloneNode(true);
        const reason = actions.querySelector("[data-role=reason]");
        if (finding.status === "rejected") reason.value = finding.reason;
        else if (state.reasons[finding.id]) reason.value = state.reasons[finding.id];
        reason.addEventListener("change", () => { state.reasons[finding.id] = reason.value; });
        actions.querySelector("[data-action=confirm]").addEventListener("click", () => confirmFinding(finding.id));
        actions.querySelector("[data-action=reject]").addEventListener("click", () => rejectFinding(finding.id, reason));
        actions.querySelector("[data-action=adjust]").addEventListener("click", () => startDraw("adjust", image.id, finding.id));
        const undo = actions.querySelector("[data-action=undo]");
        if (undo) {
          undo.hidden = finding.status === "pending" || finding.source !== "model";
          undo.addEventListener("click", () => undoFinding(finding.id));
        }
        reason.addEventListener("keydown", (e) => {
          if (e.key === "Enter") { e.preventDefault(); rejectFinding(finding.id, reason); }
        });
        if (finding.status === "confirmed") actions.querySelector("[data-action=confirm]").textContent = "Confirmed ✓";
        actions.querySelectorAll("button, select").forEach((c) => { c.disabled = !canReview(); });
        item.appendChild(actions);
      }
      if (data.can_review) item.appendChild(editPanel(finding, image));
      list.appendChild(item);
    });
    if (!list.children.length) list.appendChild(el("li", { className: "muted empty" }, "No findings shown."));
    view.hidden.textContent = hiddenPending
      ? hiddenPending + " pending suggestion(s) hidden by the minimum probability." : "";
  }

  // ---------------------------------------------------------------- tooth, condition and note of one finding
  function draftOf(finding) {
    if (!state.drafts[finding.id]) {
      state.drafts[finding.id] = {
        tooth: finding.tooth ? toothLabel(finding.tooth) : "", surfaces: finding.surfaces || "", note: finding.note || "",
      };
    }
    return state.drafts[finding.id];
  }

  function odontogram(finding, onPick) {
    const box = el("div", { className: "odontogram", role: "group",
      "aria-label": "Tooth chart (" + data.notation_name + "), as you face the patient" });
    const rowsOf = (kind) => data.chart_rows[kind].map((row, index) => {
      const line = el("div", { className: "odontogram-row " + (index === 0 ? "upper" : "lower"), role: "group",
        "aria-label": (kind === "primary" ? "Primary " : "") + (index === 0 ? "upper teeth" : "lower teeth") });
      row.forEach((fdi, position) => {
        const info = toothInfo(fdi);
        const button = el("button", {
          type: "button", className: "tooth" + (position === row.length / 2 ? " midline" : ""),
          "data-fdi": fdi, "aria-pressed": finding.tooth === fdi ? "true" : "false",
          "aria-label": "Tooth " + info.label + ", " + info.name, title: info.name,
        }, info.label);
        button.disabled = !canReview();
        button.addEventListener("click", () => onPick(fdi));
        line.appendChild(button);
      });
      return line;
    });
    const permanent = el("div", { className: "odontogram-set" });
    rowsOf("permanent").forEach((r) => permanent.appendChild(r));
    const primary = el("div", { className: "odontogram-set primary" });
    rowsOf("primary").forEach((r) => primary.appendChild(r));
    const showPrimary = !!(finding.tooth && toothInfo(finding.tooth) && toothInfo(finding.tooth).primary);
    primary.hidden = !showPrimary;
    const toggle = el("button", { type: "button", className: "odontogram-toggle", "aria-expanded": String(showPrimary) },
      "Primary teeth");
    toggle.addEventListener("click", () => {
      primary.hidden = !primary.hidden;
      toggle.setAttribute("aria-expanded", String(!primary.hidden));
    });
    box.append(permanent, toggle, primary);
    return box;
  }

  function editPanel(finding, image) {
    const draft = draftOf(finding);
    const details = el("details", { className: "finding-edit" });
    details.open = !!state.open[finding.id];
    details.addEventListener("toggle", () => { state.open[finding.id] = details.open; });
    details.appendChild(el("summary", {}, "Tooth, condition and note"));
    const idBase = "f-" + finding.id.slice(0, 8);

    const toothRow = el("div", { className: "edit-row" });
    const toothLabelEl = el("label", { for: idBase + "-tooth" }, "Tooth (" + data.notation_name + ")");
    const toothInput = el("input", { type: "text", id: idBase + "-tooth", "data-role": "tooth", value: draft.tooth,
      autocomplete: "off", inputmode: data.tooth_notation === "fdi" ? "numeric" : "text", size: "4" });
    const surfLabel = el("label", { for: idBase + "-surfaces" }, "Surfaces");
    const surfInput = el("input", { type: "text", id: idBase + "-surfaces", "data-role": "surfaces",
      value: draft.surfaces, autocomplete: "off", size: "5", title: Object.entries(data.surfaces || {})
        .map(([k, v]) => k + " " + v).join(", ") });
    const setTooth = el("button", { type: "button", "data-action": "set-tooth" }, "Set tooth");
    toothInput.addEventListener("input", () => { draft.tooth = toothInput.value; });
    surfInput.addEventListener("input", () => { draft.surfaces = surfInput.value; });
    const submitTooth = () => {
      const fdi = parseTooth(toothInput.value);
      if (fdi === null) {
        showMessage("“" + toothInput.value + "” is not a tooth in " + data.notation_name + " notation.", "error");
        toothInput.focus();
        return;
      }
      saveEdits(finding.id, { tooth: fdi, surfaces: fdi ? surfInput.value : "" });
    };
    setTooth.addEventListener("click", submitTooth);
    [toothInput, surfInput].forEach((input) => input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); submitTooth(); }
    }));
    toothRow.append(toothLabelEl, toothInput, surfLabel, surfInput, setTooth);
    details.appendChild(toothRow);
    details.appendChild(odontogram(finding, (fdi) => {
      draft.tooth = toothLabel(fdi);
      saveEdits(finding.id, { tooth: fdi, surfaces: surfInput.value });
    }));

    const conditionRow = el("div", { className: "edit-row" });
    const conditionSelect = el("select", { id: idBase + "-condition", "data-role": "condition" });
    (data.conditions[image.modality] || []).forEach((c) => {
      const option = el("option", { value: c }, human(c));
      if (c === finding.condition) option.selected = true;
      conditionSelect.appendChild(option);
    });
    const changeCondition = el("button", { type: "button", "data-action": "change-condition" }, "Change condition");
    changeCondition.addEventListener("click", () => {
      if (conditionSelect.value === finding.condition) {
        showMessage("Choose another condition first.", "error");
        conditionSelect.focus();
        return;
      }
      run(async () => {
        const updated = await api(reviewUrl(finding.id), "POST",
          { decision: "adjust", condition: conditionSelect.value }, finding.version);
        applyFinding(updated);
        showMessage("Condition changed to " + human(updated.condition) + " (counts as confirmed).", "ok");
        select(finding.id, false);
      });
    });
    conditionRow.append(el("label", { for: idBase + "-condition" }, "Condition"), conditionSelect, changeCondition);
    details.appendChild(conditionRow);

    const noteRow = el("div", { className: "edit-row note-row" });
    const noteInput = el("textarea", { id: idBase + "-note", "data-role": "note", rows: "2", maxlength: "2000" });
    noteInput.value = draft.note;
    noteInput.addEventListener("input", () => { draft.note = noteInput.value; });
    const saveNote = el("button", { type: "button", "data-action": "save-note" }, "Save note");
    saveNote.addEventListener("click", () => saveEdits(finding.id, { note: noteInput.value }));
    noteRow.append(el("label", { for: idBase + "-note" }, "Note on this finding"), noteInput, saveNote);
    details.appendChild(noteRow);

    details.querySelectorAll("input, select, textarea, button").forEach((c) => {
      if (!c.classList.contains("odontogram-toggle")) c.disabled = !canReview();
    });
    return details;
  }

  function saveEdits(findingId, changes) {
    const found = locate(findingId);
    if (!found) return;
    run(async () => {
      const updated = await api(detailUrl(findingId), "PATCH", changes, found.finding.version);
      applyFinding(updated);
      const draft = state.drafts[findingId];
      if (draft) {
        if ("tooth" in changes) {
          draft.tooth = updated.tooth ? toothLabel(updated.tooth) : "";
          draft.surfaces = updated.surfaces;
        }
        if ("note" in changes) draft.note = updated.note;
      }
      const parts = [];
      if ("tooth" in changes) parts.push(updated.tooth ? "tooth " + toothLabel(updated.tooth) : "no tooth");
      if ("note" in changes) parts.push("note saved");
      showMessage(labelOf(updated) + ": " + parts.join(", ") + ".", "ok");
      select(findingId, false);
    });
  }

  function undoFinding(findingId) {
    const found = locate(findingId);
    if (!found || !canReview()) return;
    run(async () => {
      const updated = await api(reviewUrl(findingId), "POST", { decision: "undo" }, found.finding.version);
      applyFinding(updated);
      showMessage("Back to pending: " + labelOf(updated) + ".", "ok");
      select(findingId, true);
    });
  }

  function drawAnalysis(image, view) {
    if (!image.analyses.length) {
      view.analysis.textContent = "Not analysed.";
      return;
    }
    view.analysis.textContent = image.analyses.map((a) => {
      if (a.status === "not_assessable") {
        return "Not assessed by the AI: " + (a.not_assessable ? a.not_assessable.message : "the image could not be judged") +
          " Review the image yourself and add what you see.";
      }
      let text = a.model + ": " + a.status;
      if (a.status === "failed" && a.failure_reason) text += " (" + a.failure_reason + ")";
      if (a.unfamiliar) {
        text += " · unfamiliar image: unlike the images the AI learned from, its suggestions are less reliable" +
          (data.hide_unfamiliar ? " and are hidden (clinic setting)" : "");
      }
      return text;
    }).join(" · ");
    if (image.analyses.some((a) => a.status === "not_assessable" || a.unfamiliar)) {
      view.analysis.classList.add("analysis-warning");
    }
    if (!data.can_retry || data.locked) return;
    image.analyses.filter((a) => a.status === "failed").forEach((a) => {
      const again = el("button", { type: "button", className: "analysis-retry" }, "Analyse again");
      again.addEventListener("click", () => run(async () => {
        await api(a.retry_url, "POST");
        showMessage("Analysis queued again.", "ok");
        await reloadData();
      }));
      view.analysis.append(" ", again);
    });
  }

  function pendingTotal() {
    let pending = 0;
    data.images.forEach((image) => image.findings.forEach((f) => { if (f.status === "pending") pending += 1; }));
    return pending;
  }

  function applyLock() {
    root.classList.toggle("locked", !!data.locked);
    if (amendForm) amendForm.hidden = !data.locked;
    if (noteForm) {
      const text = document.getElementById("visit-note-text");
      const save = document.getElementById("visit-note-save");
      text.readOnly = !data.can_review || !!data.locked;
      if (save) save.disabled = !!data.locked;
    }
    if (!signButton || signArmed) return;
    // The button says what is left; it is enabled only when the report can be signed.
    const pending = pendingTotal();
    if (data.locked) signButton.textContent = "Signed";
    else if (data.analysing) signButton.textContent = "Analyses still running";
    else if (pending) signButton.textContent = "Sign report: " + plural(pending, "suggestion", "suggestions") + " undecided";
    else signButton.textContent = "Sign report";
    signButton.disabled = !!data.locked || !!data.analysing || pending > 0;
  }

  function summarise() {
    const conditions = {};
    Object.values(data.thresholds || {}).forEach((limits) => Object.assign(conditions, limits));
    const parts = Object.entries(conditions).map(([c, t]) => human(c) + " " + percentLabel(Math.max(t, state.minimum)));
    thresholdSummary.textContent = parts.length ? "Now: " + parts.join(", ") + "." : "";
    if (pendingCount) {
      const pending = pendingTotal();
      pendingCount.textContent = data.locked ? "Signed: the findings are read-only (open an amendment to change them)."
        : pending ? plural(pending, "suggestion still needs", "suggestions still need") + " a decision before signing."
          : "Every suggestion has a decision.";
    }
  }

  // ---------------------------------------------------------------- selection and keyboard
  function select(findingId, scroll) {
    state.selected = findingId;
    refresh();
    const item = imagesEl.querySelector('li[data-id="' + findingId + '"]');
    if (item && scroll !== false) item.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function move(step) {
    const shown = visibleFindings();
    if (!shown.length) return;
    let index = shown.findIndex((x) => x.finding.id === state.selected);
    index = index === -1 ? (step > 0 ? 0 : shown.length - 1) : (index + step + shown.length) % shown.length;
    select(shown[index].finding.id, true);
  }

  function nextPendingAfter(findingId) {
    const shown = visibleFindings();
    const start = shown.findIndex((x) => x.finding.id === findingId);
    for (let i = 1; i <= shown.length; i += 1) {
      const candidate = shown[(start + i) % shown.length];
      if (candidate && candidate.finding.status === "pending") return candidate.finding.id;
    }
    return findingId;
  }

  function selectedReason() {
    const item = imagesEl.querySelector('li[data-id="' + state.selected + '"]');
    return item ? item.querySelector("[data-role=reason]") : null;
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target;
    const typing = target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement ||
      (target instanceof HTMLInputElement && !["checkbox", "range", "radio", "button", "submit"].includes(target.type)) ||
      (target && target.isContentEditable);
    if (e.key === "Escape" && state.draw) { e.preventDefault(); cancelDraw(); return; }
    if (typing) return;
    const onRange = target instanceof HTMLInputElement && target.type === "range";
    const onButton = target instanceof HTMLButtonElement || target instanceof HTMLAnchorElement;
    if (state.draw && !onRange && keyboardBox(e.key, e.shiftKey)) { e.preventDefault(); return; }
    if (state.draw && e.key === "Enter" && !onButton) {
      if (!views[state.draw.imageId].save.disabled) saveDraw();
      e.preventDefault();
      return;
    }
    const pan = { ArrowLeft: [-0.15, 0], ArrowRight: [0.15, 0], ArrowUp: [0, -0.15], ArrowDown: [0, 0.15] }[e.key];
    // arrows pan only from the image or its tools: elsewhere they keep scrolling the page
    const frame = target instanceof Element ? target.closest(".viewer-frame") : null;
    if (pan && !onRange && frame) {
      const view = views[frame.closest("section.review-image").dataset.imageId];
      if (!view || !view.viewer) return;
      view.viewer.panBy(pan[0], pan[1]);
      e.preventDefault();
      return;
    }
    switch (e.key) {
      case "+": case "=": viewerAction(currentImageId(), "zoom-in"); break;
      case "-": viewerAction(currentImageId(), "zoom-out"); break;
      case "0": viewerAction(currentImageId(), "fit"); break;
      case "f": viewerAction(currentImageId(), "full-screen"); break;
      case "i": viewerAction(currentImageId(), "invert"); break;
      case "h": heatmapToggle.checked = !heatmapToggle.checked; state.heatmap = heatmapToggle.checked; refresh(); break;
      case "m": {
        const found = state.selected && locate(state.selected);
        if (!found || !found.finding.box || !canReview()) return;
        startDraw("adjust", found.image.id, found.finding.id);
        break;
      }
      case "o": overlayToggle.checked = !overlayToggle.checked; state.overlay = overlayToggle.checked; refresh(); break;
      case "j": move(1); break;
      case "k": move(-1); break;
      case "c": if (state.selected && canReview()) confirmFinding(state.selected); else return; break;
      case "u": if (state.selected && canReview()) undoFinding(state.selected); else return; break;
      case "t": {
        if (!state.selected || !data.can_review) return;
        state.open[state.selected] = true;
        refresh();
        const input = imagesEl.querySelector('li[data-id="' + state.selected + '"] [data-role=tooth]');
        if (input) input.focus();
        break;
      }
      case "r": {
        const reason = state.selected && canReview() ? selectedReason() : null;
        if (!reason) return;
        reason.focus();
        break;
      }
      case "a": {
        if (!canAdd() || !data.images.length) return;
        const current = state.selected && locate(state.selected);
        startDraw("add", current ? current.image.id : data.images[0].id, null);
        break;
      }
      default: return;
    }
    e.preventDefault();
  });

  overlayToggle.addEventListener("change", () => { state.overlay = overlayToggle.checked; refresh(); });
  heatmapToggle.addEventListener("change", () => { state.heatmap = heatmapToggle.checked; refresh(); });

  // One switch per condition present in the visit: hides its boxes (and heatmap) on the images, not its list entry.
  function buildConditionToggles() {
    conditionToggles.textContent = "";
    const present = [];
    data.images.forEach((image) => image.findings.forEach((f) => {
      if (!present.includes(f.condition)) present.push(f.condition);
    }));
    present.forEach((condition) => {
      const id = "condition-toggle-" + condition;
      const input = el("input", { type: "checkbox", id: id, "data-condition": condition });
      input.checked = !state.hiddenConditions[condition];
      input.addEventListener("change", () => {
        if (input.checked) delete state.hiddenConditions[condition];
        else state.hiddenConditions[condition] = true;
        refresh();
      });
      const label = el("label", { for: id, className: "switch condition-switch" });
      const key = el("span", { className: "swatch-mini", "aria-hidden": "true" });
      key.style.borderColor = colorOf(condition);
      label.append(input, key, " " + human(condition));
      conditionToggles.appendChild(label);
    });
    conditionToggles.hidden = !present.length;
    heatmapToggle.closest("label").hidden = !data.images.some((i) => i.findings.some((f) => f.heatmap));
  }
  showRejected.addEventListener("change", () => { state.showRejected = showRejected.checked; refresh(); });
  slider.addEventListener("input", () => {
    state.minimum = Number(slider.value) / 100;
    sliderValue.textContent = slider.value + "%";
    refresh();
  });

  // ---------------------------------------------------------------- decisions
  function reviewUrl(findingId) {
    return data.urls.finding_review.replace(data.urls.finding_placeholder, findingId);
  }

  function detailUrl(findingId) {
    return data.urls.finding_detail.replace(data.urls.finding_placeholder, findingId);
  }

  function applyFinding(updated) {
    const found = locate(updated.id);
    if (found) Object.assign(found.finding, updated);
  }

  function confirmFinding(findingId) {
    run(async () => {
      const found = locate(findingId);
      const updated = await api(reviewUrl(findingId), "POST", { decision: "confirm" }, found && found.finding.version);
      applyFinding(updated);
      showMessage("Confirmed: " + labelOf(updated) + ".", "ok");
      select(nextPendingAfter(findingId), true);
    });
  }

  function rejectFinding(findingId, reasonSelect) {
    const reason = reasonSelect.value || state.reasons[findingId] || "";
    if (!reason) {
      showMessage("Choose the reason for rejecting before pressing Reject.", "error");
      reasonSelect.focus();
      return;
    }
    run(async () => {
      const found = locate(findingId);
      const updated = await api(reviewUrl(findingId), "POST", { decision: "reject", reason: reason },
        found && found.finding.version);
      delete state.reasons[findingId];
      applyFinding(updated);
      showMessage("Rejected: " + labelOf(updated) + " (" + reasonLabel(reason) + ").", "ok");
      select(nextPendingAfter(findingId), true);
    });
  }

  // ---------------------------------------------------------------- drawing, moving and resizing boxes
  // "add": drag a box for a missed finding. "adjust": the finding's box gets handles: drag it to move it, drag a
  // handle to resize it, or drag a new box elsewhere; with the keyboard, arrows move it and Shift+arrows resize it.
  // Enter (or Save) saves it through the API with the finding's version; Esc cancels.
  function startDraw(mode, imageId, findingId) {
    if (mode === "add" ? !canAdd() : !canReview()) return;
    cancelDraw();
    const found = findingId ? locate(findingId) : null;
    const box = mode === "adjust" && found && found.finding.box ? found.finding.box.slice() : null;
    state.draw = { mode: mode, imageId: imageId, findingId: findingId, box: box, drag: null, changed: false };
    state.current = imageId;
    const view = views[imageId];
    if (!view.viewer) createViewer(imageId);
    view.stage.classList.add("drawing");
    view.draft.hidden = false;
    view.save.disabled = true;
    const keys = " Arrow keys move it, Shift+arrows resize it; Enter saves, Esc cancels.";
    if (mode === "add") {
      const condition = view.tools ? view.tools.querySelector("[data-role=condition]").value : "";
      view.draftHint.textContent = "Drag a box around the missed " + human(condition) + " on the image, then Save." + keys;
    } else {
      view.draftHint.textContent = "Move or resize the box of " + (found ? labelOf(found.finding) : "the finding") +
        " with its handles (or drag a new one), then Save." + keys;
      if (findingId) state.selected = findingId;
    }
    refresh();
    view.section.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function cancelDraw() {
    if (!state.draw) return;
    const view = views[state.draw.imageId];
    state.draw = null;
    if (view) {
      view.stage.classList.remove("drawing");
      view.draft.hidden = true;
    }
    refresh();
  }

  const clamp01 = (v) => Math.min(1, Math.max(0, v));
  const MIN_SIDE = 0.01;

  function resized(box, handle, dx, dy) {
    let [x1, y1] = [box[0], box[1]];
    let [x2, y2] = [box[0] + box[2], box[1] + box[3]];
    if (handle.includes("w")) x1 = Math.min(clamp01(x1 + dx), x2 - MIN_SIDE);
    if (handle.includes("e")) x2 = Math.max(clamp01(x2 + dx), x1 + MIN_SIDE);
    if (handle.includes("n")) y1 = Math.min(clamp01(y1 + dy), y2 - MIN_SIDE);
    if (handle.includes("s")) y2 = Math.max(clamp01(y2 + dy), y1 + MIN_SIDE);
    return [x1, y1, x2 - x1, y2 - y1];
  }

  function moved(box, dx, dy) {
    const x = Math.min(Math.max(0, box[0] + dx), 1 - box[2]);
    const y = Math.min(Math.max(0, box[1] + dy), 1 - box[3]);
    return [x, y, box[2], box[3]];
  }

  function changedBox(box) {
    const draw = state.draw;
    draw.box = box;
    draw.changed = true;
    const ok = box && box[2] >= MIN_SIDE && box[3] >= MIN_SIDE;
    views[draw.imageId].save.disabled = !ok;
    drawOverlay(data.images.find((i) => i.id === draw.imageId), views[draw.imageId]);
  }

  function attachDrawing(view, imageId) {
    const svg = view.svg;
    svg.addEventListener("pointerdown", (e) => {
      const draw = state.draw;
      if (!draw || draw.imageId !== imageId || !view.viewer) return;
      e.preventDefault();
      e.stopPropagation();
      svg.setPointerCapture(e.pointerId);
      const handle = e.target && e.target.dataset ? e.target.dataset.handle : null;
      draw.drag = { pointer: e.pointerId, kind: handle && draw.box ? handle : "new",
        start: view.viewer.toImage(e.clientX, e.clientY), startBox: draw.box ? draw.box.slice() : null };
    });
    svg.addEventListener("pointermove", (e) => {
      const draw = state.draw;
      if (!draw || draw.imageId !== imageId || !draw.drag || draw.drag.pointer !== e.pointerId) return;
      const [px, py] = view.viewer.toImage(e.clientX, e.clientY).map(clamp01);
      const drag = draw.drag;
      const [sx, sy] = drag.start.map(clamp01);
      let box;
      if (drag.kind === "new") box = [Math.min(sx, px), Math.min(sy, py), Math.abs(px - sx), Math.abs(py - sy)];
      else if (drag.kind === "move") box = moved(drag.startBox, px - sx, py - sy);
      else box = resized(drag.startBox, drag.kind, px - sx, py - sy);
      changedBox(box);
    });
    const finish = (e) => {
      const draw = state.draw;
      if (!draw || draw.imageId !== imageId || !draw.drag || draw.drag.pointer !== e.pointerId) return;
      draw.drag = null;
      if (draw.box && (draw.box[2] < MIN_SIDE || draw.box[3] < MIN_SIDE)) {
        draw.box = draw.mode === "adjust" ? (locate(draw.findingId) || { finding: {} }).finding.box || null : null;
        draw.changed = false;
      }
      view.save.disabled = !(draw.box && draw.changed);
      refresh();
    };
    svg.addEventListener("pointerup", finish);
    svg.addEventListener("pointercancel", finish);
  }

  // Keyboard-only editing of the box being drawn or adjusted: 1% of the image per press (held keys repeat); a new
  // box starts in the middle of the image.
  function keyboardBox(key, shift) {
    const draw = state.draw;
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (!draw || !steps[key]) return false;
    const [dx, dy] = steps[key].map((v) => v * 0.01);
    const box = draw.box ? draw.box.slice() : [0.4, 0.4, 0.2, 0.2];
    changedBox(shift ? resized(box, (dx ? "e" : "") + (dy ? "s" : ""), dx, dy) : moved(box, dx, dy));
    return true;
  }

  function cleanBox(box) {
    let [x, y, w, h] = box.map((v) => Math.round(v * 1e6) / 1e6);
    x = Math.min(x, 0.999);
    y = Math.min(y, 0.999);
    w = Math.min(w, 1 - x);
    h = Math.min(h, 1 - y);
    return [x, y, w, h];
  }

  function saveDraw() {
    const draw = state.draw;
    if (!draw || !draw.box || !draw.changed) return;
    const box = cleanBox(draw.box);
    const image = data.images.find((i) => i.id === draw.imageId);
    const view = views[draw.imageId];
    run(async () => {
      if (draw.mode === "adjust") {
        const found = locate(draw.findingId);
        const updated = await api(reviewUrl(draw.findingId), "POST", { decision: "adjust", box: box },
          found && found.finding.version);
        applyFinding(updated);
        showMessage("Box saved: " + labelOf(updated) + " (counts as confirmed).", "ok");
        cancelDraw();
        select(updated.id, true);
      } else {
        const condition = view.tools.querySelector("[data-role=condition]").value;
        const created = await api(image.add_url, "POST", { condition: condition, box: box });
        created.threshold = null;
        image.findings.push(created);
        showMessage("Added: " + human(created.condition) + ".", "ok");
        cancelDraw();
        select(created.id, true);
      }
    });
  }

  // ---------------------------------------------------------------- signing and amendments
  let signArmed = false;
  if (signButton) {
    // Signing is final (only an amendment changes it) and sends the report to the practice's systems: the
    // first press says what will be signed, a second press within 10 s signs.
    let armed = null;
    const disarm = () => {
      if (armed) window.clearTimeout(armed);
      armed = null;
      signArmed = false;
      applyLock();
    };
    signButton.addEventListener("click", () => {
      if (signButton.disabled) return;
      if (!armed) {
        const shown = data.images.flatMap((image) => image.findings);
        const confirmedCount = shown.filter((f) => f.status === "confirmed").length;
        showMessage(
          "Sign the report of " + data.images.length + " image(s) with " + confirmedCount + " confirmed finding(s)? "
          + "It is final (only an amendment changes it) and goes to the practice's systems. Press again to sign.",
          "info",
        );
        signButton.textContent = "Press again to sign";
        signArmed = true;
        armed = window.setTimeout(disarm, 10000);
        return;
      }
      disarm();
      run(async () => {
        const report = await api(data.urls.report, "POST");
        await reloadData();
        showMessage("Report signed: version " + report.version + " by " + report.signed_by + ".", "ok");
      });
    });
  }

  if (noteForm) {
    // The visit note: its hidden version is what the change was made on (a stale one is refused with who wrote it).
    noteForm.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!data.can_review || data.locked) return;
      const text = document.getElementById("visit-note-text").value;
      const version = document.getElementById("visit-note-version");
      run(async () => {
        const note = await api(data.urls.visit_note, "PUT", { text: text }, version.value);
        version.value = note.version;
        data.visit_note = { text: note.text, version: note.version, updated_by: note.updated_by };
        document.getElementById("visit-note-status").textContent = "Saved by " + note.updated_by + ".";
        showMessage("Visit note saved.", "ok");
      });
    });
  }

  if (amendForm) {
    amendForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const input = document.getElementById("amend-reason");
      const reason = input.value.trim();
      if (!reason) {
        showMessage("An amendment needs a reason.", "error");
        input.focus();
        return;
      }
      run(async () => {
        await api(data.urls.amend, "POST", { reason: reason });
        input.value = "";
        await reloadData();
        showMessage("Amendment opened: change the findings, then sign the new version.", "ok");
      });
    });
  }

  // Re-read the page's JSON blob (one source of truth) and its state line; a full reload if that fails.
  async function reloadData() {
    let doc;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin", headers: { "Accept": "text/html", "X-Background-Request": "1" },
      });
      if (!response.ok) throw new Error(String(response.status));
      doc = new DOMParser().parseFromString(await response.text(), "text/html");
    } catch (err) {
      window.location.reload();
      return;
    }
    const fresh = doc.getElementById("review-data");
    if (!fresh) { window.location.reload(); return; }
    data = JSON.parse(fresh.textContent);
    if (noteForm) {
      const text = document.getElementById("visit-note-text");
      const version = document.getElementById("visit-note-version");
      const typed = text.value !== (text.dataset.saved === undefined ? text.defaultValue : text.dataset.saved);
      version.value = data.visit_note.version;
      if (!typed) text.value = data.visit_note.text;
      text.dataset.saved = data.visit_note.text;
      document.getElementById("visit-note-status").textContent = data.visit_note.updated_by
        ? "Last saved by " + data.visit_note.updated_by + "." : "";
    }
    // Drafts of a finding someone else changed meanwhile keep what this person typed; the others follow the server.
    Object.keys(state.drafts).forEach((id) => {
      const found = locate(id);
      if (!found) delete state.drafts[id];
    });
    const stateLine = doc.getElementById("review-state");
    const current = document.getElementById("review-state");
    if (stateLine && current) current.replaceWith(document.importNode(stateLine, true));
    const selected = state.selected;
    state.draw = null;
    build();
    state.selected = selected && locate(selected) ? selected : null;
    refresh();
    if (data.analysing) startPolling(POLL_MS); // still running after a reload: not at once again
  }

  // ---------------------------------------------------------------- live analysis status
  function startPolling(firstDelay = 0) {
    if (state.polling) return;
    state.polling = true;
    liveEl.hidden = false;
    liveEl.textContent = "Analysing…";
    let delay = POLL_MS;
    const schedule = (ms) => { state.pollTimer = window.setTimeout(tick, ms); };
    const later = () => {
      schedule(delay);
      delay = Math.min(delay * 1.5, POLL_MAX_MS);
    };
    const tick = async () => {
      state.pollTimer = null;
      if (document.hidden) { // a background tab reads (and audits) nothing; it checks again when shown
        state.pollPaused = true;
        return;
      }
      try {
        const page = await api(data.urls.analyses, "GET");
        const analyses = page.results || page;
        const total = analyses.length;
        const finished = analyses.filter((a) => ["done", "failed", "not_assessable"].includes(a.status)).length;
        if (total === 0) { // the page says analysing but this list shows none (e.g. emergency access): wait
          later();
          return;
        }
        if (finished < total) {
          liveEl.textContent = "Analysing… " + finished + " of " + total + " done";
          later();
          return;
        }
        state.polling = false;
        const failed = analyses.filter((a) => a.status === "failed").length;
        const refused = analyses.filter((a) => a.status === "not_assessable").length;
        liveEl.textContent = "Analysis finished" + (failed ? " (" + failed + " failed)" : "") +
          (refused ? " (" + refused + " not assessed by the AI)" : "") + ".";
        await reloadData();
      } catch (err) {
        liveEl.textContent = "Analysis status unavailable: " + err.message + " (retrying)";
        later();
      }
    };
    state.pollResume = () => {
      if (!state.pollPaused) return;
      state.pollPaused = false;
      delay = POLL_MS;
      schedule(0);
    };
    schedule(firstDelay);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.pollResume) state.pollResume();
  });

  build();
  refresh();
  if (data.analysing) startPolling();
})();
