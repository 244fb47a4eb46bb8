// lmforge playground: chat or completion against this server's /v1 API, streamed in, and a
// runs view that draws loss curves from the run directories' metrics. Plain browser
// JavaScript, no build step, nothing loaded from the network. Text from the model or from run
// files is always put in with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { model: null, messages: [], controller: null };

// ------------------------------------------------------------------ shared

const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("lmforge-api-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("lmforge-api-key", keyInput.value.trim());
  loadModel();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = keyInput.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    setStatus(await errorMessage(response), true);
    return;
  }
  state.model = (await response.json()).data[0].id;
  $("model-name").textContent = state.model;
  setStatus("");
}

// ------------------------------------------------------------------ playground

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function settings() {
  return {
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value),
  };
}

// Reads a Server-Sent Events body and calls onData with each event's parsed JSON.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data: "))
        .map((line) => line.slice(6))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || state.controller) return;
  if (!state.model) await loadModel();
  if (!state.model) return;
  const chat = mode() === "chat";
  const body = { model: state.model, stream: true, stream_options: { include_usage: true }, ...settings() };
  let output;
  let shown; // what this exchange added to the transcript: removed again if it fails
  if (chat) {
    body.messages = [...state.messages, { role: "user", content: text }];
    const user = el("div", "message user");
    user.append(el("span", "role", "user"), text);
    const answer = el("div", "message assistant");
    output = el("span", "content");
    answer.append(el("span", "role", "assistant"), output);
    shown = [user, answer];
  } else {
    body.prompt = text;
    const block = el("div", "completion-block");
    output = el("span", "output");
    block.append(el("span", "prompt", text), output);
    shown = [block];
  }
  $("transcript").append(...shown);
  output.dataset.chunks = "0";
  $("prompt").value = "";
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  setStatus("generating…");
  let finish = null;
  let usage = null;
  try {
    const response = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        const piece = chat ? choice.delta.content : choice.text;
        if (piece) {
          output.textContent += piece;
          output.dataset.chunks = String(Number(output.dataset.chunks) + 1);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    if (chat) state.messages.push(body.messages.at(-1), { role: "assistant", content: output.textContent });
    const tokens = usage ? `, ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "";
    setStatus(`done (${finish || "stopped"}${tokens})`);
    output.dataset.finished = finish || "";
  } catch (error) {
    if (error.name === "AbortError") {
      // what arrived before Stop stays; a chat keeps it as the answer
      if (chat) state.messages.push(body.messages.at(-1), { role: "assistant", content: output.textContent });
      setStatus("stopped");
    } else {
      shown.forEach((node) => node.remove());
      if (!$("prompt").value) $("prompt").value = text; // to edit and send again
      setStatus(String(error.message), true);
    }
  } finally {
    state.controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("prompt-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("prompt-form").requestSubmit();
});
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", () => {
  state.messages = [];
  $("transcript").replaceChildren();
  setStatus("");
});

// ------------------------------------------------------------------ runs

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(value) {
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(4);
}

// A line chart of loss by step: one polyline per series ({name, className, points: [[x, y]]}).
function lossChart(series) {
  const width = 640, height = 320, left = 56, right = 16, top = 16, bottom = 40;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => left + ((x - x0) / (x1 - x0 || 1)) * (width - left - right);
  const sy = (y) => height - bottom - ((y - y0) / (y1 - y0 || 1)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  chart.append(svg("title", {}, "loss by step"));
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }));
  chart.append(svg("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    chart.append(svg("text", { x: left - 6, y: sy(y) + 4, "text-anchor": "end" }, short(y)));
    const x = x0 + ((x1 - x0) * i) / 4;
    chart.append(svg("text", { x: sx(x), y: height - bottom + 16, "text-anchor": "middle" }, short(Math.round(x))));
  }
  chart.append(svg("text", { x: (left + width) / 2, y: height - 6, "text-anchor": "middle" }, "step"));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, class: s.className, "data-series": s.name }));
    chart.append(svg("text", { x: width - right - 4, y: top + 12 + 14 * i, "text-anchor": "end", class: `legend ${s.className}` }, s.name));
  });
  return chart;
}

function table(rows, columns) {
  const node = el("table");
  const head = el("tr");
  columns.forEach((c) => head.append(el("th", "", c)));
  node.append(head);
  for (const row of rows) {
    const line = el("tr");
    row.forEach((cell) => line.append(el("td", typeof cell === "number" ? "number" : "", typeof cell === "number" ? short(cell) : cell)));
    node.append(line);
  }
  return node;
}

async function showRun(name, button) {
  document.querySelectorAll("#run-list button").forEach((b) => b.classList.toggle("active", b === button));
  const detail = $("run-detail");
  const response = await fetch(`/api/runs/${encodeURIComponent(name)}`, { headers: headers() });
  if (!response.ok) {
    detail.replaceChildren(el("p", "error", await errorMessage(response)));
    return;
  }
  const run = await response.json();
  const parts = [el("h2", "", run.name)];
  const series = [{ name: "train loss", className: "train", points: run.train.map((e) => [e.step, e.loss]) }];
  const evalLoss = run.eval.filter((e) => "eval_loss" in e).map((e) => [e.step, e.eval_loss]);
  if (evalLoss.length) series.push({ name: "eval loss", className: "eval", points: evalLoss });
  if (run.train.length || evalLoss.length) parts.push(lossChart(series));
  const numbers = (title, values) => {
    const rows = Object.entries(values);
    if (rows.length) parts.push(el("h3", "", title), table(rows, ["name", "value"]));
  };
  numbers("Last training step", run.last_train);
  numbers("Last evaluation", run.last_eval);
  numbers("Compute", run.compute);
  if (run.scores.length) {
    parts.push(el("h3", "", "Scores"), table(run.scores.map((s) => [s.model, s.dataset, s.metric, s.score]), ["model", "dataset", "metric", "score"]));
  }
  detail.replaceChildren(...parts);
}

async function loadRuns() {
  const response = await fetch("/api/runs", { headers: headers() });
  if (!response.ok) {
    $("runs-note").textContent = await errorMessage(response);
    return;
  }
  const { runs_dir: dir, runs } = await response.json();
  $("runs-note").textContent = runs.length ? `Runs in ${dir}:` : `No runs in ${dir}.`;
  $("run-list").replaceChildren(
    ...runs.map((run) => {
      const button = el("button", "", run.name);
      button.type = "button";
      const facts = run.kind === "training" ? `${run.steps ?? 0} steps, loss ${run.loss === null ? "-" : short(run.loss)}` : "evaluation";
      button.append(el("small", "", facts));
      button.addEventListener("click", () => showRun(run.name, button));
      const item = el("li");
      item.append(button);
      return item;
    }),
  );
}

function show(view) {
  $("playground").hidden = view !== "playground";
  $("runs").hidden = view !== "runs";
  $("show-playground").classList.toggle("active", view === "playground");
  $("show-runs").classList.toggle("active", view === "runs");
  if (view === "runs") loadRuns();
}

$("show-playground").addEventListener("click", () => show("playground"));
$("show-runs").addEventListener("click", () => show("runs"));
loadModel();
