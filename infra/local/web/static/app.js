// The reference client: the five published steps against the public v1 API.
// Every rule (eligibility, limits, verification, masking) is the server's; this page
// only shows what the API answers, errors included (code and message, as sent).
// /_local/* is the dev tooling's stand-in for the app's login, the face SDK and the phone.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { user: null, token: null, banks: [], elig: null, verification: null,
  face: null, idemKey: null, queryId: null, maskedPhone: null, smsSeen: 0, poll: null };

const LABELS = {
  PENDING: "处理中 pending", RESPONDED: "已答复 responded", NO_RESPONSE: "未答复 no answer",
  FAILED: "失败 failed", READY: "已生成 ready", EXPIRED: "已过期 expired",
  DELETED: "已删除 deleted", DEBIT: "借记卡 debit", CREDIT: "贷记卡 credit",
};
const label = (s) => LABELS[s] || s;

// ---- calls -------------------------------------------------------------------------

async function call(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (state.token && path.startsWith("/v1/")) init.headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    return { ok: false, status: 0, body: { error: { code: "NETWORK_ERROR", message: String(e) } } };
  }
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (_) {
    parsed = { error: { code: "UNPARSEABLE_RESPONSE", message: text.slice(0, 300) } };
  }
  return { ok: res.ok, status: res.status, body: parsed, retryAfter: res.headers.get("retry-after") };
}

// Shows an API error exactly as returned: status, code, message and the documented extras.
function showError(id, res) {
  const el = $(id);
  const err = (res.body && res.body.error) || { code: "UNKNOWN", message: JSON.stringify(res.body) };
  const extras = ["next_allowed_at", "locked_until", "retry_after_seconds"]
    .filter((k) => err[k] !== undefined).map((k) => `${k}: ${err[k]}`);
  if (res.retryAfter && err.retry_after_seconds === undefined) extras.push(`Retry-After: ${res.retryAfter}`);
  el.replaceChildren();
  const head = document.createElement("b");
  head.className = "code";
  head.textContent = err.code;
  el.append(`错误 error · HTTP ${res.status} · `, head, ` — ${err.message}`);
  if (extras.length) el.append(document.createElement("br"), extras.join(" · "));
  el.dataset.code = err.code;
  el.hidden = false;
}
const clearError = (id) => { $(id).hidden = true; $(id).dataset.code = ""; };

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

function fill(tbodyParent, rows) {
  const tbody = $(tbodyParent).tBodies[0];
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    r.forEach((c) => cell(tr, c));
    tbody.append(tr);
  }
  return tbody;
}

// ---- local phone (SNS emulator) ----------------------------------------------------

async function smsFor(masked) {
  const res = await call("GET", `/_local/sms?masked=${encodeURIComponent(masked)}`);
  return res.ok ? res.body.messages : [];
}

function showSms(id, messages) {
  const el = $(id);
  el.replaceChildren();
  const tag = document.createElement("div");
  tag.className = "local";
  tag.textContent = "本地短信模拟器 local SMS emulator — 手机收到的短信 what the phone received";
  el.append(tag);
  for (const m of messages) {
    const p = document.createElement("p");
    p.className = "sms";
    p.textContent = `${m.phone_number}: ${m.message}`;
    el.append(p);
  }
  el.hidden = false;
}

// ---- 0. sign in --------------------------------------------------------------------

async function loadUsers(seed) {
  const res = await call(seed ? "POST" : "GET", seed ? "/_local/seed" : "/_local/users");
  if (!res.ok) return showError("err-signin", res);
  clearError("err-signin");
  const sel = $("user");
  const keep = sel.value;
  sel.replaceChildren();
  for (const u of res.body.users) {
    const o = document.createElement("option");
    o.value = u.user_id;
    o.textContent = `${u.user_id} — ${u.description}`;
    sel.append(o);
  }
  if (keep) sel.value = keep;
  if (seed) $("signed-in").textContent = "已重置种子用户 users re-seeded (no active query, no cooldown)";
  if (seed) $("signed-in").hidden = false;
}

async function signIn() {
  const user = $("user").value;
  const res = await call("GET", `/_local/token?user=${encodeURIComponent(user)}`);
  if (!res.ok) return showError("err-signin", res);
  clearError("err-signin");
  Object.assign(state, { user, token: res.body.token, verification: null, face: null,
    idemKey: null, queryId: null });
  $("signed-in").textContent = `已登录 signed in: ${user}`;
  $("signed-in").hidden = false;
  for (const id of ["step-progress", "step-notice", "step-view", "report", "code-sent", "sms-submit", "face-ok"]) $(id).hidden = true;
  await Promise.all([loadEligibility(), loadBanks(), loadHistory()]);
  $("step-eligibility").hidden = false;
  $("step-authorize").hidden = false;
}

// ---- 1. eligibility ----------------------------------------------------------------

async function loadEligibility() {
  const res = await call("GET", "/v1/eligibility");
  if (!res.ok) return showError("err-eligibility", res);
  clearError("err-eligibility");
  const e = (state.elig = res.body);
  const yes = (b) => (b ? "是 yes" : "否 no");
  const t = $("eligibility");
  t.replaceChildren();
  for (const [k, v] of [
    ["实名认证 real-name verified", yes(e.real_name_verified)],
    ["试点地区 pilot region", yes(e.in_pilot_region)],
    ["进行中的查询 active query", e.active_query_id || "无 none"],
    ["下次可查询 next allowed at", e.next_allowed_at || "—"],
    ["可以查询 eligible", yes(e.eligible)],
  ]) {
    const tr = t.insertRow();
    cell(tr, k, "k");
    cell(tr, v, k.includes("eligible") ? (e.eligible ? "ok" : "bad") : "");
  }
  t.dataset.eligible = String(e.eligible);
  $("agreement-version").textContent = e.agreement_version;
}

async function loadHistory() {
  const res = await call("GET", "/v1/card-queries");
  if (!res.ok) return showError("err-eligibility", res);
  const tbody = fill("history", []);
  for (const q of res.body.queries) {
    const tr = tbody.insertRow();
    cell(tr, q.query_id);
    cell(tr, q.submitted_at);
    cell(tr, label(q.report_status));
    const b = document.createElement("button");
    b.className = "secondary";
    b.textContent = "打开 open";
    b.onclick = () => openQuery(q.query_id);
    tr.insertCell().append(b);
  }
}

// ---- 2. verify and authorize -------------------------------------------------------

async function loadBanks() {
  const res = await call("GET", "/v1/banks");
  if (!res.ok) return showError("err-submit", res);
  state.banks = res.body.banks;
  const box = $("banks");
  box.replaceChildren();
  for (const b of state.banks) {
    const l = document.createElement("label");
    l.className = "bank";
    const c = document.createElement("input");
    c.type = "checkbox";
    c.value = b.code;
    c.checked = true;
    l.append(c, ` ${b.name} `);
    const s = document.createElement("small");
    s.textContent = `${b.code} · ${b.name_en}`;
    l.append(s);
    box.append(l);
  }
}
const chosenBanks = () => [...$("banks").querySelectorAll("input:checked")].map((c) => c.value);
const setAllBanks = (on) => $("banks").querySelectorAll("input").forEach((c) => { c.checked = on; });

async function sendCode(purpose, errId, smsBox, after) {
  const res = await call("POST", "/v1/verifications", { purpose });
  if (!res.ok) return showError(errId, res);
  clearError(errId);
  state.maskedPhone = res.body.masked_phone;
  after(res.body);
  // The emulator records the publish synchronously with the 201; read it back.
  showSms(smsBox, (await smsFor(res.body.masked_phone)).slice(0, 1));
}

async function passFace(purpose) {
  const res = await call("GET", `/_local/face-token?user=${encodeURIComponent(state.user)}&purpose=${purpose}`);
  return res.ok ? { token: res.body.face_token } : { error: res };
}

async function submit() {
  clearError("err-submit");
  const body = {
    banks: chosenBanks(),
    consent: { agreement_version: state.elig ? state.elig.agreement_version : "", accepted: $("consent").checked },
    verification: { verification_id: state.verification || "", sms_code: $("sms-code").value.trim() },
    face_token: state.face || "",
    payment_password: $("password").value,
  };
  // One key per attempt that reached no answer: a retry after a lost response replays it.
  state.idemKey = state.idemKey || crypto.randomUUID();
  $("submit").disabled = true;
  // Counted before submitting: with prompt banks the notice can beat the 202's handling.
  state.smsSeen = state.maskedPhone ? (await smsFor(state.maskedPhone)).length : 0;
  const res = await call("POST", "/v1/card-queries", body, { "idempotency-key": state.idemKey });
  $("submit").disabled = false;
  if (res.status !== 0) state.idemKey = null;
  if (!res.ok) return showError("err-submit", res);
  const a = res.body;
  $("accepted").textContent = `已受理 accepted: ${a.query_id} · 提交 submitted ${a.submitted_at} · `
    + `报告最迟 report due by ${a.report_due_by}`;
  await openQuery(a.query_id);
}

// ---- 3. progress, 4. notice --------------------------------------------------------

async function openQuery(id) {
  state.queryId = id;
  if (state.poll) clearTimeout(state.poll);
  for (const s of ["step-notice", "step-view", "report"]) $(s).hidden = true;
  $("step-progress").hidden = false;
  await poll();
}

async function poll() {
  const res = await call("GET", `/v1/card-queries/${state.queryId}`);
  if (!res.ok) return showError("err-progress", res);
  clearError("err-progress");
  const q = res.body;
  const tbody = fill("progress", []);
  for (const p of q.progress) {
    const tr = tbody.insertRow();
    tr.dataset.bank = p.bank_code;
    tr.dataset.status = p.status;
    cell(tr, `${p.bank_name} ${p.bank_code}`);
    cell(tr, label(p.status), p.status === "RESPONDED" ? "ok" : p.status === "PENDING" ? "" : "bad");
  }
  const done = q.progress.filter((p) => p.status !== "PENDING").length;
  $("report-status").textContent = `已答复 answered ${done}/${q.progress.length} · 报告 report: ${label(q.report_status)}`;
  $("report-status").dataset.status = q.report_status;
  if (q.report_status === "PENDING") {
    state.poll = setTimeout(poll, 700);
    return;
  }
  state.poll = null;
  loadEligibility();
  loadHistory();
  if (q.report_status === "READY") {
    $("step-view").hidden = false;
    watchNotice(20);
  }
}

// The notice is sent right after the report is stored: look for it on the local phone.
async function watchNotice(tries) {
  // Opened from the history without a code requested in this session: the page does not
  // know the phone (the API only ever shows it masked, in a verification's answer).
  if (!state.maskedPhone) return;
  const msgs = await smsFor(state.maskedPhone);
  if (msgs.length > state.smsSeen || tries <= 0) {
    showSms("sms-notice", msgs.slice(0, Math.max(1, msgs.length - state.smsSeen)));
    $("step-notice").hidden = false;
    return;
  }
  setTimeout(() => watchNotice(tries - 1), 500);
}

// ---- 5. step-up and the report -----------------------------------------------------

async function viewReport(stepUp) {
  clearError("err-view");
  const path = `/v1/card-queries/${state.queryId}/report`;
  const res = await call("POST", path, stepUp);
  if (!res.ok) return showError("err-view", res);
  const r = res.body;
  // The cards come in pages (the summary is whole on each): the step-up opened the
  // view, the cursors fetch the rest without another code.
  const allCards = [...r.cards];
  for (let next = r.next_cursor; next; ) {
    const more = await call("POST", path, { cursor: next });
    if (!more.ok) return showError("err-view", more);
    allCards.push(...more.body.cards);
    next = more.body.next_cursor;
  }
  const s = r.summary;
  $("report-totals").textContent = `共 ${s.total_cards} 张 total · 借记卡 debit ${s.debit_cards} · 贷记卡 credit ${s.credit_cards}`;
  const sum = fill("report-summary", []);
  for (const b of s.banks) {
    const tr = sum.insertRow();
    tr.dataset.bank = b.bank_code;
    cell(tr, `${b.bank_name} ${b.bank_code}`);
    cell(tr, label(b.status), b.status === "RESPONDED" ? "ok" : "bad");
    cell(tr, String(b.debit_cards), "num");
    cell(tr, String(b.credit_cards), "num");
  }
  const cards = fill("report-cards", []);
  for (const c of allCards) {
    const tr = cards.insertRow();
    tr.dataset.bank = c.bank_code;
    tr.dataset.kind = c.kind;
    cell(tr, `${c.bank_name} ${c.bank_code}`);
    cell(tr, label(c.kind));
    cell(tr, c.masked_number, "mono");
    // HOOKS(dispute-card): once POST /v1/card-queries/{id}/disputes exists, a per-row
    // button goes here (step-up first; show the returned status and case id).
  }
  if (!allCards.length) {
    const tr = cards.insertRow();
    cell(tr, "无卡片 no cards").colSpan = 3;
  }
  const ul = $("report-notices");
  ul.replaceChildren();
  for (const n of r.notices) {
    const li = document.createElement("li");
    li.textContent = n;
    ul.append(li);
  }
  $("report-dates").textContent = `生成 generated ${r.generated_at} · 删除 deleted after ${r.expires_at}`;
  // HOOKS(delete-report): once DELETE /v1/card-queries/{id}/report exists, its button goes
  // into #report-actions (step-up first; then reload the history, which lists DELETED).
  $("report").hidden = false;
}

// ---- wiring ------------------------------------------------------------------------

$("signin").onclick = signIn;
$("reseed").onclick = () => loadUsers(true);
$("banks-all").onclick = () => setAllBanks(true);
$("banks-none").onclick = () => setAllBanks(false);
$("send-code").onclick = () => sendCode("SUBMIT_QUERY", "err-code", "sms-submit", (v) => {
  state.verification = v.verification_id;
  $("code-sent").textContent = `验证码已发送至 code sent to ${v.masked_phone} · 有效期至 valid until ${v.expires_at}`;
  $("code-sent").hidden = false;
});
$("face").onclick = async () => {
  const f = await passFace("SUBMIT_QUERY");
  if (f.error) return showError("err-face", f.error);
  clearError("err-face");
  state.face = f.token;
  $("face-ok").textContent = "人脸核验通过 face verification passed (本地令牌 local token, 5 分钟内有效 valid 5 min)";
  $("face-ok").hidden = false;
};
$("submit").onclick = submit;
$("view-face").onclick = async () => {
  const f = await passFace("VIEW_REPORT");
  if (f.error) return showError("err-view", f.error);
  await viewReport({ face_token: f.token });
};
let viewVerification = null;
$("view-send-code").onclick = () => sendCode("VIEW_REPORT", "err-view", "sms-view", (v) => {
  viewVerification = v.verification_id;
});
$("view-sms").onclick = () => viewReport({
  verification: { verification_id: viewVerification || "", sms_code: $("view-code").value.trim() },
});

loadUsers(false);
