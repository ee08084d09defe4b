// The MangaAssist chat page: plain JavaScript, no build step. It talks to the same API as any
// client: POST /v1/chat, POST /v1/feedback, and GET /v1/page-config for the MLflow UI link and the
// reason codes the feedback endpoint accepts.
"use strict";

const STRINGS = {
  en: {
    title: "MangaAssist",
    skip: "Skip to the message box",
    language: "Language",
    context: "Page context",
    pageType: "Page type",
    pt_search: "search",
    pt_product: "product",
    pt_category: "category",
    pt_cart: "cart",
    productId: "Product id (optional)",
    userType: "Customer",
    ut_guest: "guest",
    ut_signed_in: "signed in",
    ut_prime: "prime",
    conversation: "Conversation",
    message: "Your message",
    send: "Send",
    hint: "Enter sends; Shift+Enter starts a new line.",
    you: "You",
    assistant: "MangaAssist",
    sources: "Sources",
    noSources: "No sources cited.",
    helpful: "Helpful",
    notHelpful: "Not helpful",
    reason: "Reason",
    comment: "Comment (optional)",
    sendFeedback: "Send feedback",
    feedbackFor: "Feedback on this answer",
    thanksUp: "Thanks! Your thumbs-up was recorded.",
    thanksDown: "Thanks! Your feedback was recorded.",
    thinking: "MangaAssist is answering…",
    trace: "View trace in MLflow",
    intent: "intent",
    failed: "Request failed",
    reasons: {
      helpful: "Helpful",
      accurate: "Accurate",
      wrong_recommendation: "Wrong recommendation",
      wrong_answer: "Wrong answer",
      not_grounded: "Not backed by a source",
      irrelevant: "Irrelevant",
      incomplete: "Incomplete",
      outdated: "Outdated",
      wrong_price_or_stock: "Wrong price or stock",
      wrong_language: "Wrong language",
      too_slow: "Too slow",
      unsafe: "Unsafe",
      offensive: "Offensive",
      other: "Other",
    },
  },
  ja: {
    title: "MangaAssist",
    skip: "メッセージ入力欄へ移動",
    language: "言語",
    context: "ページの状況",
    pageType: "ページの種類",
    pt_search: "検索",
    pt_product: "商品",
    pt_category: "カテゴリ",
    pt_cart: "カート",
    productId: "商品ID（任意）",
    userType: "お客様の種類",
    ut_guest: "ゲスト",
    ut_signed_in: "ログイン済み",
    ut_prime: "プライム",
    conversation: "会話",
    message: "メッセージ",
    send: "送信",
    hint: "Enterで送信、Shift+Enterで改行します。",
    you: "あなた",
    assistant: "MangaAssist",
    sources: "出典",
    noSources: "出典はありません。",
    helpful: "役に立った",
    notHelpful: "役に立たなかった",
    reason: "理由",
    comment: "コメント（任意）",
    sendFeedback: "フィードバックを送信",
    feedbackFor: "この回答へのフィードバック",
    thanksUp: "ありがとうございます。評価を記録しました。",
    thanksDown: "ありがとうございます。フィードバックを記録しました。",
    thinking: "MangaAssistが回答しています…",
    trace: "MLflowでトレースを見る",
    intent: "意図",
    failed: "リクエストに失敗しました",
    reasons: {
      helpful: "役に立った",
      accurate: "正確",
      wrong_recommendation: "おすすめが違う",
      wrong_answer: "回答が間違っている",
      not_grounded: "出典に基づいていない",
      irrelevant: "関係がない",
      incomplete: "不十分",
      outdated: "情報が古い",
      wrong_price_or_stock: "価格・在庫が違う",
      wrong_language: "言語が違う",
      too_slow: "遅い",
      unsafe: "安全でない",
      offensive: "不快",
      other: "その他",
    },
  },
};
// Reasons a thumbs-up would give; the thumbs-down form offers the others.
const POSITIVE_REASONS = new Set(["helpful", "accurate"]);

const state = {
  config: { mlflow_ui_url: "", mlflow_experiment_id: "", reason_codes: [] },
  sessionId: sessionId(),
  turns: 0,
};

function sessionId() {
  let id = window.sessionStorage.getItem("mangaassist-session");
  if (!id) {
    const bytes = new Uint8Array(8);
    window.crypto.getRandomValues(bytes);
    id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    window.sessionStorage.setItem("mangaassist-session", id);
  }
  return id;
}

function $(id) {
  return document.getElementById(id);
}

function locale() {
  return $("ui-locale").value;
}

function strings() {
  return STRINGS[locale().slice(0, 2)] || STRINGS.en;
}

function reasonLabel(code) {
  return strings().reasons[code] || code;
}

function applyLanguage() {
  const t = strings();
  document.documentElement.lang = locale().slice(0, 2);
  document.querySelectorAll("[data-i18n]").forEach((el) => {
    const text = t[el.dataset.i18n];
    if (typeof text === "string") el.textContent = text;
  });
  $("log").setAttribute("aria-label", t.conversation);
  document.querySelectorAll("select.reason option").forEach((opt) => {
    opt.textContent = reasonLabel(opt.value);
  });
  document.querySelectorAll(".feedback").forEach((group) => group.setAttribute("aria-label", t.feedbackFor));
  document.querySelectorAll("a.trace-link").forEach((a) => {
    a.textContent = t.trace;
  });
}

function traceUrl(traceId) {
  const ui = state.config.mlflow_ui_url;
  if (!ui) return "";
  const exp = state.config.mlflow_experiment_id;
  if (!exp) return ui + "/#/experiments";
  return ui + "/#/experiments/" + encodeURIComponent(exp) + "/traces?selectedEvaluationId=tr-" + traceId;
}

async function postJson(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json; charset=utf-8", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  let data = {};
  try {
    data = await resp.json();
  } catch (_err) {
    data = {};
  }
  if (!resp.ok) {
    throw new Error(strings().failed + " (" + resp.status + "): " + (data.error || resp.statusText));
  }
  return data;
}

function addUserTurn(text, lang) {
  const li = document.createElement("li");
  li.className = "turn user";
  const who = document.createElement("p");
  who.className = "who";
  who.dataset.i18n = "you";
  who.textContent = strings().you;
  const body = document.createElement("div");
  body.className = "text";
  body.lang = lang;
  body.textContent = text;
  li.append(who, body);
  $("log").append(li);
}

function addAnswer(answer, lang) {
  const t = strings();
  const n = ++state.turns;
  const li = $("answer-template").content.firstElementChild.cloneNode(true);
  li.dataset.traceId = answer.trace_id;
  li.dataset.responseId = answer.response_id;
  li.querySelectorAll("[data-i18n]").forEach((el) => {
    const text = t[el.dataset.i18n];
    if (typeof text === "string") el.textContent = text;
  });
  const reply = li.querySelector(".reply");
  reply.lang = lang;
  reply.textContent = answer.reply;

  const list = li.querySelector(".citation-list");
  if (answer.citations.length) {
    for (const id of answer.citations) {
      const item = document.createElement("li");
      item.className = "citation";
      item.textContent = id;
      list.append(item);
    }
  } else {
    const none = document.createElement("li");
    none.className = "no-citation";
    none.dataset.i18n = "noSources";
    none.textContent = t.noSources;
    list.append(none);
  }
  li.querySelector(".intent").textContent = t.intent + ": " + answer.intent;

  const link = li.querySelector(".trace-link");
  const href = traceUrl(answer.trace_id);
  link.dataset.traceId = answer.trace_id;
  if (href) {
    link.href = href;
    link.textContent = t.trace;
    link.hidden = false;
  }

  wireFeedback(li, answer, n);
  $("log").append(li);
  return li;
}

function wireFeedback(li, answer, n) {
  const group = li.querySelector(".feedback");
  group.setAttribute("aria-label", strings().feedbackFor);
  const up = li.querySelector(".thumbs-up");
  const down = li.querySelector(".thumbs-down");
  const form = li.querySelector(".reason-form");
  const select = li.querySelector("select.reason");
  const comment = li.querySelector("input.comment");
  const status = li.querySelector(".feedback-status");
  select.id = "reason-" + n;
  comment.id = "comment-" + n;
  li.querySelector(".reason-label").htmlFor = select.id;
  li.querySelector(".comment-label").htmlFor = comment.id;
  form.id = "reason-form-" + n;
  down.setAttribute("aria-controls", form.id);
  for (const code of state.config.reason_codes.filter((c) => !POSITIVE_REASONS.has(c))) {
    const opt = document.createElement("option");
    opt.value = code;
    opt.textContent = reasonLabel(code);
    select.append(opt);
  }

  async function send(feedback, reasonCode, text) {
    status.textContent = "";
    try {
      await postJson("/v1/feedback", {
        response_id: answer.response_id,
        trace_id: answer.trace_id,
        feedback: feedback,
        reason_code: reasonCode,
        comment: text,
        session_id: state.sessionId,
      });
      up.setAttribute("aria-pressed", String(feedback === "thumbs_up"));
      down.setAttribute("aria-pressed", String(feedback === "thumbs_down"));
      status.dataset.i18n = feedback === "thumbs_up" ? "thanksUp" : "thanksDown";
      status.textContent = strings()[status.dataset.i18n];
      li.dataset.feedback = feedback;
      form.hidden = true;
      down.setAttribute("aria-expanded", "false");
    } catch (err) {
      delete status.dataset.i18n;
      status.textContent = err.message;
    }
  }

  up.addEventListener("click", () => send("thumbs_up", "helpful", ""));
  down.addEventListener("click", () => {
    form.hidden = !form.hidden;
    down.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) select.focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send("thumbs_down", select.value, comment.value.trim());
  });
}

async function onSubmit(event) {
  event.preventDefault();
  const box = $("message");
  const text = box.value.trim();
  if (!text) return;
  const lang = locale();
  const productId = $("product-id").value.trim();
  const pageContext = { page_type: $("page-type").value, locale: lang };
  if (productId) pageContext.product_id = productId;
  $("error").textContent = "";
  $("busy").textContent = strings().thinking;
  $("send").disabled = true;
  addUserTurn(text, lang);
  box.value = "";
  try {
    const answer = await postJson("/v1/chat", {
      session_id: state.sessionId,
      message: text,
      page_context: pageContext,
      user_type: $("user-type").value,
    });
    addAnswer(answer, lang);
  } catch (err) {
    $("error").textContent = err.message;
  } finally {
    $("busy").textContent = "";
    $("send").disabled = false;
    box.focus();
  }
}

async function init() {
  try {
    const resp = await fetch("/v1/page-config", { headers: { Accept: "application/json" } });
    if (resp.ok) state.config = await resp.json();
  } catch (_err) {
    // the page still chats; it just has no trace links and no reasons to offer
  }
  const saved = window.localStorage.getItem("mangaassist-locale");
  if (saved && STRINGS[saved.slice(0, 2)]) $("ui-locale").value = saved;
  else if ((navigator.language || "").startsWith("ja")) $("ui-locale").value = "ja-JP";
  $("ui-locale").addEventListener("change", () => {
    window.localStorage.setItem("mangaassist-locale", locale());
    applyLanguage();
  });
  applyLanguage();
  $("chat-form").addEventListener("submit", onSubmit);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", init);
