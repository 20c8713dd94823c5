// Runs static/js/upload.js against a minimal fake page (no browser): drives uploads whose first attempt fails
// and prints, as JSON, the Idempotency-Key of every request the page sent. Used by test_upload_page_js.py.
import { readFileSync } from "node:fs";
import vm from "node:vm";

const [scriptPath, scenario] = process.argv.slice(2);

class Element {
  constructor(id) {
    this.id = id;
    this.children = [];
    this.listeners = {};
    this.dataset = {};
    this.className = "";
    this.hidden = false;
    this._text = "";
  }
  set textContent(value) { this._text = String(value); this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent || "").join(""); }
  appendChild(child) { this.children.push(child); return child; }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type, event = {}) { (this.listeners[type] || []).forEach((fn) => fn({ preventDefault() {}, ...event })); }
  click() { this.fire("click"); }
  get classList() { return { add() {}, remove() {} }; }
}

const elements = {};
for (const id of ["uploader", "dropzone", "files", "results", "modality", "camera", "camera-start", "camera-shoot", "camera-stop"]) {
  elements[id] = new Element(id);
}
Object.assign(elements.uploader.dataset, {
  endpoint: "/api/v1/patients/p/images/", csrf: "t", analysisUrl: "/a/00000000-0000-0000-0000-000000000000/",
  reviewUrl: "/r/00000000-0000-0000-0000-000000000000/",
});
elements.modality.value = "photo";

const sent = [];
// Per scenario, what each successive request gets: "lost" (the connection drops), a status code, or "ok".
const plans = {
  lost_then_ok: ["lost", 200],
  server_error_then_ok: [500, 201],
  throttled_then_ok: [429, 201],
};
const plan = (plans[scenario] || []).slice();

function fetchStub(url, options) {
  if (!options || options.method !== "POST") return Promise.resolve({ ok: false, status: 404, json: async () => ({}) });
  const name = options.body.get("file").name;
  sent.push({ name, key: options.headers["Idempotency-Key"] });
  const outcome = plan.length ? plan.shift() : 201;
  if (outcome === "lost") return Promise.reject(new TypeError("Failed to fetch"));
  const ok = outcome < 300;
  const body = ok
    ? { id: "img", width: 1, height: 1, original_format: "PNG", analysis: null }
    : { error: { code: "x", message: "x", details: { retry_after_seconds: 1 } } };
  return Promise.resolve({ ok, status: outcome, statusText: "", json: async () => body });
}

const context = {
  document: {
    getElementById: (id) => elements[id] || null,
    createElement: (tag) => new Element(tag),
    createTextNode: (text) => ({ textContent: text }),
  },
  fetch: fetchStub,
  FormData,
  Blob,
  setTimeout,
  Promise,
  console,
  navigator: {},
};
context.window = context;
context.crypto = globalThis.crypto;
vm.createContext(context);
vm.runInContext(readFileSync(scriptPath, "utf8"), context);

const tick = () => new Promise((resolve) => setTimeout(resolve, 20));
function retryButton(li) { return li.children.find((c) => c.className === "retry"); }

elements.files.files = [new File(["a"], "first.png"), new File(["b"], "second.png")];
elements.files.fire("change");
await tick();
// Press "Try again" on every row that offers it (the first file's), then let the retries finish.
for (const li of elements.results.children) {
  const button = retryButton(li);
  if (button) button.click();
}
await tick();
await tick();
process.stdout.write(JSON.stringify({ sent, rows: elements.results.children.map((li) => li.className) }));
