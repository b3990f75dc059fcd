// Mesh dashboard: small enhancements; every page works without them where that is cheap.
"use strict";

// A copy button copies the text of the element its data-copy names.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const text = source.value !== undefined ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text.trim());
    button.textContent = "Copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(source);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

// The template editor lists the {{variables}} its messages use as you type.
function listVariables() {
  const out = document.getElementById("detected");
  if (!out) return;
  const names = [];
  document.querySelectorAll("textarea[name=content]").forEach((area) => {
    for (const match of area.value.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
      if (!names.includes(match[1])) names.push(match[1]);
    }
  });
  out.textContent = names.length ? names.join(", ") : "none";
}
document.addEventListener("input", (event) => {
  if (event.target.matches("textarea[name=content]")) listVariables();
});
document.addEventListener("DOMContentLoaded", listVariables);

// The editor's message buttons (add, remove, move up, move down) change the rows in the page. Without JavaScript the
// same buttons post the form and the server answers with the rows changed (prompt_pages.py): nothing is saved either way.
function numberMessages(list) {
  const rows = [...list.querySelectorAll(".message")];
  rows.forEach((row, i) => {
    const n = i + 1;
    row.querySelectorAll("[data-n]").forEach((span) => { span.textContent = n; });
    row.querySelectorAll("[data-field]").forEach((field) => { field.id = `${field.dataset.field}-${n}`; });
    row.querySelectorAll("label[data-for]").forEach((label) => { label.htmlFor = `${label.dataset.for}-${n}`; });
    row.querySelectorAll("button[name=action]").forEach((button) => {
      const verb = button.value.split("-")[0];
      button.value = `${verb}-${n}`;
      button.disabled = (verb === "up" && n === 1) || (verb === "down" && n === rows.length);
    });
  });
  list.closest("form").querySelector("button[value=add]").disabled = rows.length >= Number(list.dataset.max);
}

function blankMessage(after) {
  const row = after.cloneNode(true);
  const text = row.querySelector("textarea");
  text.value = text.textContent = "";
  row.querySelector("select").value = after.querySelector("select").value === "user" ? "assistant" : "user";
  return row;
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("form[data-editor] button[name=action]");
  if (!button) return;
  event.preventDefault();
  const list = button.form.querySelector("ol.messages");
  const rows = [...list.querySelectorAll(".message")];
  const [verb, at] = button.value.split("-");
  const row = rows[Number(at) - 1];
  let focus = button;
  if (verb === "add" && rows.length < Number(list.dataset.max)) {
    const added = blankMessage(rows[rows.length - 1]);
    list.append(added);
    focus = added.querySelector("textarea");
  } else if (verb === "remove" && row) {
    const next = row.nextElementSibling || row.previousElementSibling;
    if (next) row.remove(); else list.replaceChildren(blankMessage(row));
    focus = (next || list.firstElementChild).querySelector("textarea");
  } else if (verb === "up" && row && row.previousElementSibling) {
    list.insertBefore(row, row.previousElementSibling);
  } else if (verb === "down" && row && row.nextElementSibling) {
    list.insertBefore(row.nextElementSibling, row);
  }
  numberMessages(list);
  listVariables();
  if (focus.disabled) focus = row && row.querySelector("textarea");  // moved to an end: that button is off now
  if (focus) focus.focus();
});

// The Test asks nothing while a variable is blank: it says which (the server says the same without JavaScript).
function blankVariables(names) {
  const listed = names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
  return names.length === 1
    ? `${listed} is empty: fill it in to test; nothing was sent`
    : `${listed} are empty: fill them in to test; nothing was sent`;
}

document.addEventListener("htmx:beforeRequest", (event) => {
  const inputs = [...event.target.querySelectorAll("input[data-variable]")];
  const empty = inputs.filter((input) => !input.value.trim());
  inputs.forEach((input) => {
    if (empty.includes(input)) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  });
  if (!empty.length) return;
  event.preventDefault();
  const said = document.createElement("p");
  said.className = "error";
  said.setAttribute("role", "alert");
  said.textContent = blankVariables(empty.map((input) => input.dataset.variable));
  document.getElementById("test-result").replaceChildren(said);
  empty[0].focus();
});

// Card top-up (its own page, /billing/pay/<payment intent>, the only one that loads stripe.js): stripe.js tokenises the card (the number never reaches Mesh), Mesh charges it for the
// payment it started, and stripe.js runs 3-D Secure when the bank asks for it (confirmCardPayment).
// Ticked "Save this card for auto-refill": once paid, the card is the account's auto-refill card.
async function payByCard(form) {
  const box = form.closest("[data-payment-intent]");
  const status = box.querySelector("[role=status]");
  const button = form.querySelector("button");
  button.disabled = true;
  status.textContent = "Paying…";
  try {
    const { token, error } = await box.stripe.createToken(box.card);
    if (error) throw new Error(error.message || "the card was refused");
    const csrf = form.querySelector("input[name=_csrf_token]").value;
    const answer = await fetch(`/billing/topups/${box.dataset.paymentIntent}/card`, {
      method: "POST", headers: { "content-type": "application/json", "x-csrftoken": csrf },
      body: JSON.stringify({ token: token.id, save_card: Boolean(form.elements.save_card && form.elements.save_card.checked) }),
    }).then((r) => r.json());
    if (answer.error) throw new Error(answer.error);
    if (answer.status === "requires_action") {
      const result = await box.stripe.confirmCardPayment(answer.client_secret);
      if (result.error) throw new Error(result.error.message || "authentication failed");
    }
    status.textContent = "Payment received; the balance updates when Stripe confirms it.";
    status.classList.add("good");
    setTimeout(() => { location.href = "/billing"; }, 1000);
  } catch (err) {
    status.textContent = err.message;
    status.classList.add("bad");
    button.disabled = false;
  }
}

function mountCard(box) {
  if (box.card || !window.Stripe) return;
  box.stripe = window.Stripe(box.dataset.key);
  box.card = box.stripe.elements().create("card");
  box.card.mount(box.querySelector(".card-element"));
  box.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    payByCard(event.target);
  });
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-payment-intent]").forEach(mountCard);
});

// Live parts (the balance, the newest page of logs) follow the account's events (GET /api/events, Server-Sent
// Events on the session cookie) instead of polling: an element with data-live (the event names it follows) is
// reloaded from its data-live-url (else this page) with the event's position, which the server answers once its
// read model shows that event. One reload at a time per part; events that arrive meanwhile make one more. The
// stream starts after what the page shows (data-live-from), so an event between the page and the stream is not
// missed.
function reloadPart(id, position) {
  const part = document.getElementById(id);
  if (!part) return;
  if (part.dataset.loading) { part.dataset.pending = position; return; }
  part.dataset.loading = "1";
  const url = new URL(part.dataset.liveUrl || location.href, location.href);
  url.searchParams.set("position", position);
  htmx.ajax("GET", url.pathname + url.search, { target: `#${id}`, select: `#${id}`, swap: "outerHTML" })
    .finally(() => {
      const now = document.getElementById(id);
      const pending = part.dataset.pending;
      if (now && now !== part) { delete now.dataset.loading; }
      delete part.dataset.loading;
      if (pending) { delete part.dataset.pending; reloadPart(id, pending); }
    });
}

function followEvents() {
  const parts = [...document.querySelectorAll("[data-live][id]")];
  if (!parts.length || !window.EventSource || !window.htmx) return;
  const following = {};
  parts.forEach((part) => part.dataset.live.split(",").forEach((type) => {
    (following[type] = following[type] || []).push(part.id);
  }));
  const starts = parts.map((part) => Number(part.dataset.liveFrom)).filter((n) => Number.isInteger(n) && n > 0);
  const from = starts.length ? `&from=${Math.min(...starts)}` : "";
  const source = new EventSource(`/api/events?types=${encodeURIComponent(Object.keys(following).join(","))}${from}`);
  Object.entries(following).forEach(([type, ids]) => {
    source.addEventListener(type, (event) => ids.forEach((id) => reloadPart(id, event.lastEventId)));
  });
}
document.addEventListener("DOMContentLoaded", followEvents);

// A form with data-confirm asks once, naming what it acts on, before it is sent (an operator's suspension or
// take-back); without JavaScript it is sent as it is.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) event.preventDefault();
});
