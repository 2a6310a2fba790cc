// The Events dashboard: pages drawn from the admin JSON endpoints beside this file. Everything read from the
// server is written as text nodes or attribute values, never parsed as markup.
"use strict";

(() => {
  const api = location.pathname.replace(/\/dashboard\/[^/]*$/, "");
  const page = document.getElementById("page");
  const dialogBox = document.getElementById("confirm");
  const chunk = 100;
  let generation = 0;
  let timer = null;

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(api + path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      throw new Error((data && (data.detail || data.title)) || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  const link = (kind, id, text) => el("a", { href: `#/${kind}/${encodeURIComponent(id)}` }, text ?? id);
  const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC") : "—");
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function age(seconds) {
    if (!seconds) return "—";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
    return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
  }

  function fields(pairs) {
    return el("dl", {}, pairs.filter((p) => p).map(([name, value, key]) => [
      el("dt", {}, name),
      el("dd", { "data-field": key }, value ?? "—"),
    ]));
  }

  function table(headers, rows, empty) {
    if (rows.length === 0) return el("p", { class: "muted" }, empty);
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map(([text, number]) => el("th", { class: number ? "number" : null }, text)))),
      el("tbody", {}, rows));
  }

  const number = (value, key, bad) =>
    el("td", { class: `number${bad && value > 0 ? " bad" : ""}`, "data-field": key }, value);

  function render(gen, ...nodes) {
    if (gen === generation) page.replaceChildren(...nodes.flat(Infinity).filter((node) => node !== null && node !== undefined));
  }

  // Overview: per handler, refreshed every 2 seconds while it is shown.
  async function overview(gen) {
    try {
      const data = await call("GET", "/overview");
      const card = (title, value, key) =>
        el("div", { class: "card" }, el("div", { class: "muted" }, title), el("div", { class: "value", "data-field": key }, value));
      render(gen,
        el("h1", {}, "Overview"),
        el("section", { class: "cards" },
          card("Unprocessed events", data.unprocessedEvents, "unprocessed-events"),
          card("Runnable requests", data.runnableRequests, "runnable-requests"),
          card("Oldest runnable", age(data.oldestRunnableRequestAgeSeconds), "oldest-runnable"),
          card("Dead requests", data.deadRequests, "dead-requests")),
        table(
          [["Handler"], ["Runnable", 1], ["Backing off", 1], ["Running", 1], ["Dead", 1],
            [`Completed (last ${data.windowMinutes} min)`, 1], ["Per minute", 1], ["Oldest runnable", 1]],
          data.handlers.map((h) => el("tr", { "data-handler": h.handlerName },
            el("td", {}, h.handlerName),
            number(h.runnable, "runnable"),
            number(h.backingOff, "backing-off"),
            number(h.running, "running"),
            el("td", { class: `number${h.dead > 0 ? " bad" : ""}`, "data-field": "dead" },
              h.dead > 0 ? el("a", { href: "#/dead" }, h.dead) : h.dead),
            number(h.completed, "completed"),
            number(h.completedPerMinute.toFixed(2), "per-minute"),
            el("td", { class: "number", "data-field": "oldest" }, age(h.oldestRunnableAgeSeconds)))),
          "No handler has live requests or recent completions."),
        el("p", { class: "muted", id: "updated" }, `Read at ${when(data.at)}; refreshes every 2 s.`));
    } catch (error) {
      render(gen, el("h1", {}, "Overview"), el("p", { class: "error", id: "error" }, error.message));
    }
    if (gen === generation) timer = setTimeout(() => overview(gen), 2000);
  }

  // Dead requests grouped by cause, each group with its sample and its bulk actions.
  async function dead(gen) {
    const groups = await call("GET", "/triage");
    render(gen,
      el("h1", {}, "Dead requests by cause"),
      groups.length === 0 ? el("p", { class: "muted", id: "no-dead" }, "No dead requests.") : groups.map(group));
  }

  function group(g) {
    const sample = g.sample;
    return el("section", { class: "group", "data-group": g.id },
      el("h2", {}, g.description),
      fields([
        ["Requests", g.count, "count"],
        ["Cause", g.exceptionType ? `${g.kind}: ${g.exceptionType}` : g.kind, "kind"],
        ["Pattern", g.pattern, "pattern"],
        ["Handlers", g.handlerNames.join(", "), "handlers"],
        ["Events", g.eventNames.join(", "), "events"],
        ["First seen", when(g.firstSeen), "first-seen"],
        ["Last seen", when(g.lastSeen), "last-seen"],
        ["Sample", el("span", {}, link("request", sample.id), ` (${sample.handlerName} for `,
          link("event", sample.eventId, sample.eventName), ")"), "sample"],
        ["Sample error", (sample.lastError || "").split("\n")[0], "sample-error"],
      ]),
      g.frames.length > 0 ? el("pre", { class: "stack" }, g.frames.join("\n")) : null,
      el("div", { class: "actions" },
        el("button", { class: "primary", "data-action": "canary", onclick: () => canary(g) }, "Canary re-execute…"),
        el("button", { "data-action": "re-execute", onclick: () => bulk(g, "re-execute") }, "Re-execute all…"),
        el("button", { class: "danger", "data-action": "cancel", onclick: () => bulk(g, "cancel") }, "Cancel all…")));
  }

  // A confirmation dialog: what will change, a Confirm button, progress, and the result.
  function dialog(title) {
    const text = el("p", { id: "confirm-text" }, "Counting…");
    const progress = el("progress", { id: "confirm-progress", hidden: true });
    const result = el("p", { id: "confirm-result" });
    const ok = el("button", { id: "confirm-ok", class: "primary", disabled: true }, "Confirm");
    const close = el("button", { id: "confirm-close", onclick: () => dialogBox.close() }, "Close");
    dialogBox.replaceChildren(el("h2", {}, title), text, progress, result, el("div", { class: "buttons" }, ok, close));
    dialogBox.showModal();
    const fail = (error) => {
      result.className = "error";
      result.textContent = error.message;
      progress.hidden = true;
    };
    const confirm = (action) => {
      ok.disabled = false;
      ok.addEventListener("click", async () => {
        ok.disabled = true;
        progress.hidden = false;
        try { await action(); } catch (error) { fail(error); }
        dialogBox.dataset.done = "true";
      }, { once: true });
    };
    delete dialogBox.dataset.done;
    return { text, progress, result, confirm, fail };
  }

  async function bulk(g, command) {
    const canceling = command === "cancel";
    const box = dialog(`${canceling ? "Cancel" : "Re-execute"} every request of this cause`);
    try {
      const dry = await call("POST", `/bulk/${command}`, { group: g.id, dryRun: true });
      box.text.textContent = `${plural(dry.selected, "dead request")} of "${g.description}" will be ` +
        `${canceling ? "canceled: they will not run again" : "run again from zero errors"}.`;
      box.confirm(async () => {
        box.progress.max = Math.max(dry.selected, 1);
        box.progress.value = 0;
        const total = { updated: 0, refused: 0, locked: 0 };
        let after = null;
        for (;;) {
          const step = await call("POST", `/bulk/${command}`, { group: g.id, limit: chunk, chunkSize: chunk, after });
          total.updated += step.updated;
          total.refused += step.refused;
          total.locked += step.locked;
          box.progress.value = total.updated + total.refused + total.locked;
          box.result.textContent = `${canceling ? "Canceled" : "Re-executed"} ${total.updated} of ${dry.selected}…`;
          if (step.selected < chunk || !step.cursor) break;
          after = step.cursor;
        }
        box.result.textContent = `${canceling ? "Canceled" : "Re-executed"} ${total.updated}; ` +
          `refused ${total.refused} (changed meanwhile), locked ${total.locked} (held by a worker: run again to retry).`;
      });
    } catch (error) {
      box.fail(error);
    }
  }

  async function canary(g) {
    const wait = 30;
    const box = dialog("Canary re-execute");
    try {
      const dry = await call("POST", "/bulk/re-execute", { group: g.id, dryRun: true });
      box.text.textContent = `One of ${plural(dry.selected, "dead request")} of "${g.description}" runs first; ` +
        `the others are re-executed only if it completes within ${wait} s.`;
      box.confirm(async () => {
        box.result.textContent = "Waiting for the canary…";
        const outcome = await call("POST", "/bulk/canary", { group: g.id, canaries: 1, waitSeconds: wait });
        const rest = outcome.rest ? `; the rest: ${outcome.rest.updated} re-executed` : "";
        box.result.replaceChildren(`Canary ${outcome.outcome}${rest}. `,
          ...outcome.canaries.map((c) => link("request", c.id, `canary ${c.state}`)));
        box.progress.hidden = true;
      });
    } catch (error) {
      box.fail(error);
    }
  }

  function single(r, command) {
    const box = dialog(`${command === "cancel" ? "Cancel" : "Re-execute"} this request`);
    box.text.textContent = `${r.handlerName} for ${r.eventName} ${r.eventId} will be ` +
      `${command === "cancel" ? "canceled" : "run again from zero errors"}.`;
    box.confirm(async () => {
      const written = await call("POST", `/requests/${encodeURIComponent(r.id)}/${command}`);
      box.progress.hidden = true;
      box.result.textContent = `Done: the request is ${written.state}.`;
    });
  }

  // A request: its event's data, its attempts, its last error with the stack, its trace.
  async function request(gen, id) {
    const r = await call("GET", `/requests/${encodeURIComponent(id)}`);
    const [message, ...stack] = (r.lastError || "").split("\n");
    render(gen,
      el("h1", {}, `Request ${r.handlerName} for ${r.eventName}`),
      fields([
        ["Id", r.id, "id"],
        ["State", r.state, "state"],
        ["Handler", r.handlerName, "handler"],
        ["Event", link("event", r.eventId, `${r.eventName} ${r.eventId}`), "event"],
        ["Event time", when(r.eventTimestamp), "event-time"],
        ["Failed attempts", `${r.errors} of ${r.maxErrors} allowed`, "errors"],
        ["Last attempt", when(r.lastAttemptAt), "last-attempt"],
        r.backoffUntil ? ["Backing off until", when(r.backoffUntil), "backoff-until"] : null,
        r.completedAt ? ["Completed", when(r.completedAt), "completed-at"] : null,
        r.canceledAt ? ["Canceled", when(r.canceledAt), "canceled-at"] : null,
        r.leaseUntil ? ["Held until", when(r.leaseUntil), "lease-until"] : null,
        ["Priority", r.priority, "priority"],
        ["Entity", r.entityName ? `${r.entityName} ${r.entityId ?? ""}` : null, "entity"],
        ["Correlation id", r.correlationId, "correlation-id"],
        ["Trace id", r.traceId, "trace-id"],
      ]),
      el("div", { class: "actions" },
        el("button", { class: "primary", "data-action": "re-execute", onclick: () => single(r, "re-execute") }, "Re-execute…"),
        el("button", { class: "danger", "data-action": "cancel", onclick: () => single(r, "cancel") }, "Cancel…")),
      el("h2", {}, "Last error"),
      r.lastError ? el("pre", { "data-field": "last-error" }, message) : el("p", { class: "muted" }, "None."),
      stack.length > 0 ? [el("h2", {}, "Stack"), el("pre", { class: "stack", "data-field": "stack" }, stack.join("\n"))] : null,
      el("h2", {}, "Event data"),
      el("pre", { "data-field": "event-data" }, JSON.stringify(r.eventData, null, 2)));
  }

  // An event and every request it made.
  async function event(gen, id) {
    const e = await call("GET", `/events/${encodeURIComponent(id)}`);
    render(gen,
      el("h1", {}, `Event ${e.name}`),
      fields([
        ["Id", e.id, "id"],
        ["Time", when(e.timestamp), "time"],
        ["Processed", when(e.processedAt), "processed-at"],
        ["Fully handled", e.fullyHandled ? "yes" : "no", "fully-handled"],
        ["Entity", e.entityName ? `${e.entityName} ${e.entityId ?? ""}` : null, "entity"],
        ["Correlation id", e.correlationId, "correlation-id"],
        ["Trace id", e.traceId, "trace-id"],
      ]),
      el("h2", {}, "Requests"),
      table([["Handler"], ["Status"], ["Failed attempts", 1], ["Last error"]],
        e.requests.map(({ request: r, status }) => el("tr", { "data-request": r.id },
          el("td", {}, link("request", r.id, r.handlerName)),
          el("td", { "data-field": "status" }, status),
          el("td", { class: "number" }, `${r.errors} of ${r.maxErrors}`),
          el("td", {}, (r.lastError || "").split("\n")[0]))),
        "No requests (not processed yet, or no handler listens to it)."),
      el("h2", {}, "Data"),
      el("pre", { "data-field": "event-data" }, JSON.stringify(e.data, null, 2)));
  }

  function route() {
    clearTimeout(timer);
    const gen = ++generation;
    const [name, id] = location.hash.replace(/^#\/?/, "").split("/");
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.id === `nav-${name || "overview"}` || (a.id === "nav-overview" && !name));
    }
    const show = { dead, request, event }[name] || overview;
    show(gen, id && decodeURIComponent(id)).catch((error) =>
      render(gen, el("h1", {}, "Not shown"), el("p", { class: "error", id: "error" }, error.message)));
  }

  document.getElementById("lookup").addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    const id = document.getElementById("lookup-id").value.trim();
    if (!id) return;
    const found = await fetch(`${api}/requests/${encodeURIComponent(id)}`, { method: "GET" }).catch(() => null);
    location.hash = found && found.ok ? `#/request/${encodeURIComponent(id)}` : `#/event/${encodeURIComponent(id)}`;
  });
  dialogBox.addEventListener("close", () => { if (dialogBox.dataset.done) route(); });
  window.addEventListener("hashchange", route);
  route();
})();
