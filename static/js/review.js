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
    draw: null, // {mode: "add"|"adjust", imageId, findingId, box, start, pointer}
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
  const pct = (v) => (v * 100).toFixed(3) + "%";
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
    Object.keys(views).forEach((k) => delete views[k]);
    if (!data.images.length) {
      imagesEl.appendChild(el("p", { className: "muted" }, "This visit has no images."));
      return;
    }
    data.images.forEach((image, index) => {
      const section = el("section", { className: "review-image card", "data-image-id": image.id });
      const title = el("h2", {}, image.modality_label + " " + (index + 1));
      title.appendChild(el("small", {}, " " + image.width + "×" + image.height));
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
      const draftHint = el("span", { className: "draft-hint" });
      const save = el("button", { type: "button", className: "primary" }, "Save");
      const cancel = el("button", { type: "button" }, "Cancel");
      save.addEventListener("click", saveDraw);
      cancel.addEventListener("click", cancelDraw);
      draft.append(draftHint, save, cancel);
      section.appendChild(draft);

      const body = el("div", { className: "review-body" });
      const stage = el("div", { className: "stage" });
      stage.style.maxWidth = "calc(75vh * " + (image.width / image.height).toFixed(4) + ")";
      const img = el("img", {
        src: image.preview_url, width: image.width, height: image.height, draggable: "false",
        alt: image.modality_label + " " + (index + 1) + " of this visit",
      });
      const svg = svgEl("svg", { class: "overlay", width: "100%", height: "100%", role: "img",
        "aria-label": "Findings drawn on the image" });
      stage.append(img, svg);
      attachDrawing(stage, image.id);

      const side = el("div", { className: "finding-side" });
      const list = el("ol", { className: "finding-list", "aria-label": "Findings of this image" });
      const hidden = el("p", { className: "muted hidden-count" });
      side.append(list, hidden);
      body.append(stage, side);
      section.appendChild(body);
      imagesEl.appendChild(section);
      views[image.id] = { section, stage, svg, list, hidden, draft, draftHint, save, tools, analysis };
    });
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
  }

  function drawOverlay(image, view) {
    const svg = view.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    image.findings.forEach((finding) => {
      if (!finding.box || !isVisible(finding, image)) return;
      const [x, y, w, h] = finding.box;
      const color = colorOf(finding.condition);
      const kind = finding.source === "clinician" ? "added" : finding.status;
      const group = svgEl("g", { class: "box " + kind + (finding.id === state.selected ? " selected" : ""),
        "data-id": finding.id });
      const geometry = { x: pct(x), y: pct(y), width: pct(w), height: pct(h) };
      group.appendChild(svgEl("rect", Object.assign({ class: "halo" }, geometry)));
      group.appendChild(svgEl("rect", Object.assign({ class: "outline", stroke: color, fill: color }, geometry)));
      if (finding.source === "clinician") {
        // Corner markers: a clinician's finding, not the model's.
        [[x, y], [x + w, y], [x, y + h], [x + w, y + h]].forEach(([cx, cy]) => {
          group.appendChild(svgEl("circle", { class: "marker", cx: pct(cx), cy: pct(cy), r: "5", fill: color }));
        });
      }
      const above = y > 0.06;
      const label = svgEl("text", { class: "label", x: pct(x), y: pct(above ? y : y + h), dy: above ? "-5" : "16",
        fill: color });
      label.textContent = labelOf(finding) + (finding.status === "rejected" ? " (rejected)" : "");
      group.appendChild(label);
      group.addEventListener("click", () => { if (!state.draw) select(finding.id, false); });
      svg.appendChild(group);
    });
    if (state.draw && state.draw.imageId === image.id && state.draw.box) {
      const [x, y, w, h] = state.draw.box;
      svg.appendChild(svgEl("rect", { class: "draft", x: pct(x), y: pct(y), width: pct(w), height: pct(h) }));
    }
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
    switch (e.key) {
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

  // ---------------------------------------------------------------- drawing boxes
  function startDraw(mode, imageId, findingId) {
    if (mode === "add" ? !canAdd() : !canReview()) return;
    cancelDraw();
    state.draw = { mode: mode, imageId: imageId, findingId: findingId, box: null, start: null, pointer: null };
    const view = views[imageId];
    view.stage.classList.add("drawing");
    view.draft.hidden = false;
    view.save.disabled = true;
    if (mode === "add") {
      const condition = view.tools ? view.tools.querySelector("[data-role=condition]").value : "";
      view.draftHint.textContent = "Drag a box around the missed " + human(condition) + " on the image, then Save.";
    } else {
      const found = locate(findingId);
      view.draftHint.textContent = "Drag the corrected box for " + (found ? labelOf(found.finding) : "the finding") +
        " on the image, then Save.";
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

  function normalised(stage, event) {
    const rect = stage.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
  }

  function attachDrawing(stage, imageId) {
    stage.addEventListener("pointerdown", (e) => {
      if (!state.draw || state.draw.imageId !== imageId) return;
      e.preventDefault();
      stage.setPointerCapture(e.pointerId);
      state.draw.pointer = e.pointerId;
      state.draw.start = normalised(stage, e);
      state.draw.box = null;
    });
    stage.addEventListener("pointermove", (e) => {
      const draw = state.draw;
      if (!draw || draw.imageId !== imageId || draw.pointer !== e.pointerId || !draw.start) return;
      const [x1, y1] = draw.start;
      const [x2, y2] = normalised(stage, e);
      draw.box = [Math.min(x1, x2), Math.min(y1, y2), Math.abs(x2 - x1), Math.abs(y2 - y1)];
      drawOverlay(data.images.find((i) => i.id === imageId), views[imageId]);
    });
    const finish = (e) => {
      const draw = state.draw;
      if (!draw || draw.imageId !== imageId || draw.pointer !== e.pointerId) return;
      draw.pointer = null;
      draw.start = null;
      const ok = draw.box && draw.box[2] >= 0.01 && draw.box[3] >= 0.01;
      if (!ok) draw.box = null;
      views[imageId].save.disabled = !ok;
      refresh();
    };
    stage.addEventListener("pointerup", finish);
    stage.addEventListener("pointercancel", finish);
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
    if (!draw || !draw.box) return;
    const box = cleanBox(draw.box);
    const image = data.images.find((i) => i.id === draw.imageId);
    const view = views[draw.imageId];
    run(async () => {
      if (draw.mode === "adjust") {
        const found = locate(draw.findingId);
        const updated = await api(reviewUrl(draw.findingId), "POST", { decision: "adjust", box: box },
          found && found.finding.version);
        applyFinding(updated);
        showMessage("Box adjusted: " + labelOf(updated) + " (counts as confirmed).", "ok");
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
