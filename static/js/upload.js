// Upload page: drag-and-drop or chosen files, and photos from the device camera. Each file is sent
// on its own to the API (session + CSRF), so each gets its own result or its own clear error; a server fault
// or a lost connection offers to send that file again. Each file gets one Idempotency-Key, sent again with every
// retry of that file: when the first attempt was stored but its answer was lost, the retry gets the stored image
// back (200) instead of storing the file twice.
(function () {
  "use strict";
  const root = document.getElementById("uploader");
  if (!root) return;
  const endpoint = root.dataset.endpoint;
  const csrf = root.dataset.csrf;
  const drop = document.getElementById("dropzone");
  const input = document.getElementById("files");
  const results = document.getElementById("results");
  const modality = document.getElementById("modality");
  const ZERO = "00000000-0000-0000-0000-000000000000";

  // Follow the analysis of a stored image until it is done (or failed), then link to the review.
  async function follow(li, name, data) {
    const status = document.createElement("span");
    status.className = "analysis-status";
    li.appendChild(document.createTextNode(" · "));
    li.appendChild(status);
    if (!data.analysis || !data.analysis.id) {
      status.textContent = "no model for this type of scan on this installation";
      return;
    }
    const url = root.dataset.analysisUrl.replace(ZERO, data.analysis.id);
    for (let attempt = 0; attempt < 600; attempt += 1) {
      let body = null;
      try {
        const response = await fetch(url, {
          credentials: "same-origin", headers: { "Accept": "application/json", "X-Background-Request": "1" },
        });
        body = response.ok ? await response.json() : null;
      } catch (err) {
        body = null;
      }
      const state = body ? body.status : "unknown";
      if (state === "done") {
        const count = body.findings.length;
        status.textContent = "analysis done: " + count + " suggestion" + (count === 1 ? "" : "s") + " ";
        status.dataset.state = "done";
        if (data.visit) {
          const link = document.createElement("a");
          link.href = root.dataset.reviewUrl.replace(ZERO, data.visit);
          link.textContent = "Review";
          status.appendChild(link);
        }
        return;
      }
      if (state === "not_assessable") {
        // The image is stored, but the AI cannot judge it: say why at once, so staff can retake it now.
        const reason = body.not_assessable || {};
        status.textContent = "not assessed by the AI: " + (reason.message || "the image could not be judged") + " ";
        status.dataset.state = "not_assessable";
        status.dataset.code = reason.code || "";
        status.setAttribute("role", "alert");
        return;
      }
      if (state === "failed") {
        status.textContent = "analysis failed" + (body.error ? ": " + body.error : "");
        status.dataset.state = "failed";
        return;
      }
      status.textContent = "analysis " + state + "…";
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }

  function row(name) {
    const li = document.createElement("li");
    li.textContent = name + ": uploading…";
    results.appendChild(li);
    return li;
  }

  // A fault of ours (5xx), a rate limit or a lost connection is not the file's fault: say so and offer to send
  // the same file again. A 4xx is the file's own problem: say why it was rejected (nothing was stored).
  // One key per file (not per attempt): crypto.randomUUID where available (secure contexts), else 128 random bits.
  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function offerRetry(li, file, name, text, key) {
    li.className = "error retryable";
    li.textContent = name + ": " + text + " ";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = "Try again";
    button.addEventListener("click", () => {
      button.disabled = true;  // one more attempt per press, not one per click
      li.textContent = name + ": waiting to send again…";
      enqueue(() => send(file, name, li, key));  // the same key: a retry of the same upload
    });
    li.appendChild(button);
  }

  async function send(file, name, li, key) {
    li = li || row(name);
    key = key || newKey();
    li.className = "";
    li.textContent = name + ": uploading…";
    const body = new FormData();
    body.append("file", file, name);
    body.append("modality", modality.value);
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, "Accept": "application/json", "Idempotency-Key": key },
      });
    } catch (err) {
      offerRetry(li, file, name, "the connection to the server was lost; try again (it will not be stored twice).", key);
      return;
    }
    const data = await response.json().catch(() => ({}));
    const error = data.error || {};
    if (response.ok) {
      li.className = "ok";
      li.textContent = name + ": stored (" + data.width + "×" + data.height + ", " + data.original_format + ")";
      follow(li, name, data);
    } else if (response.status >= 500) {
      offerRetry(li, file, name, "server problem, try again (the file itself was not refused).", key);
    } else if (response.status === 429) {
      const wait = error.details && error.details.retry_after_seconds ? " in " + error.details.retry_after_seconds + " s" : "";
      offerRetry(li, file, name, "too many uploads at once; try again" + wait + ".", key);
    } else {
      li.className = "error";
      li.textContent = name + ": rejected: " + (error.message || response.statusText) +
        (error.code ? " [" + error.code + "]" : "");
    }
  }

  // Up to PARALLEL files at a time (a browser opens at most six connections to one server anyway); each file
  // still gets its own answer, and a slow one does not hold the others back.
  const PARALLEL = 6;
  const waiting = [];
  let running = 0;
  function enqueue(job) {
    waiting.push(job);
    pump();
  }
  function pump() {
    while (running < PARALLEL && waiting.length) {
      const job = waiting.shift();
      running += 1;
      job().finally(() => { running -= 1; pump(); });
    }
  }
  function sendAll(files) {
    Array.from(files).forEach((file) => enqueue(() => send(file, file.name)));
  }

  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { sendAll(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => sendAll(e.dataTransfer.files));

  // Camera capture (getUserMedia); needs HTTPS or localhost.
  const video = document.getElementById("camera");
  const start = document.getElementById("camera-start");
  const shoot = document.getElementById("camera-shoot");
  const stop = document.getElementById("camera-stop");
  let stream = null;
  let shots = 0;
  function show(on) { video.hidden = shoot.hidden = stop.hidden = !on; start.hidden = on; }
  start.addEventListener("click", async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      row("Camera").textContent = "Camera: not available in this browser (it needs HTTPS).";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      video.srcObject = stream;
      await video.play();
      show(true);
    } catch (err) {
      row("Camera").textContent = "Camera: " + err.message;
    }
  });
  shoot.addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    shots += 1;
    canvas.toBlob((blob) => enqueue(() => send(blob, "camera-" + shots + ".jpg")), "image/jpeg", 0.92);
  });
  stop.addEventListener("click", () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    show(false);
  });
  // Listeners attached: files chosen from now on are sent. (People cannot choose files before: the input is
  // hidden and opened by this script; automation that sets the input directly waits for this mark.)
  root.dataset.ready = "1";
})();
