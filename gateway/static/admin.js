/* Huiliu operator dashboard: reads the REST API with the operator's token; shows nothing before login. */
(function () {
  "use strict";

  const TEXT = {
    zh: {
      title: "运营看板", range: "时间范围", days: "天", refresh: "刷新", logout: "退出", signin: "登录",
      signin_hint: "请输入 API 令牌（需要 admin 权限）。", messages_in: "客户消息", deflection: "机器人解决率",
      answered: "机器人回答", tickets: "工单", first_response: "首次响应 p50 / p90", volume: "各渠道每日消息量",
      outcomes: "机器人处理结果", handoff_reasons: "转人工原因", health: "连接器健康", component: "组件",
      state: "状态", detail: "详情", unanswered: "未解决的问题（知识沉淀）", question: "问题", count: "次数",
      examples: "示例", action: "操作", quarantine: "隔离区", received: "收到时间", inbox: "收件箱", reason: "原因",
      dead_letters: "死信（Webhook）", failed_at: "失败时间", subscription: "订阅", kb: "知识库", questions: "问法",
      answer: "答案", search: "搜索知识库…", questions_one_per_line: "问法（每行一个）", cancel: "取消", save: "保存",
      replay: "重放", edit: "编辑", add_to_entry: "加为问法", new_entry: "新建条目", choose_entry: "选择条目…",
      bad_token: "令牌无效或权限不足。", replayed: "已重放", saved: "已保存，机器人已更新", nothing: "暂无",
      new_entry_title: "新建知识库条目", edit_entry_title: "编辑条目", no_alarms: "没有告警",
      answer_o: "回答", suggest_o: "推荐", miss_o: "未理解", handoff_o: "转人工", lang: "English",
    },
    en: {
      title: "Operations dashboard", range: "Range", days: "days", refresh: "Refresh", logout: "Sign out",
      signin: "Sign in", signin_hint: "Enter an API token (admin scope).", messages_in: "Customer messages",
      deflection: "Deflection rate", answered: "Bot answers", tickets: "Tickets", first_response: "First response p50 / p90",
      volume: "Volume by channel per day", outcomes: "Bot outcomes", handoff_reasons: "Handoff reasons",
      health: "Connector health", component: "Component", state: "State", detail: "Detail",
      unanswered: "Unanswered questions (grow the KB)", question: "Question", count: "Count", examples: "Examples",
      action: "Action", quarantine: "Quarantine", received: "Received", inbox: "Inbox", reason: "Reason",
      dead_letters: "Dead letters (webhooks)", failed_at: "Failed at", subscription: "Subscription", kb: "Knowledge base",
      questions: "Phrasings", answer: "Answer", search: "Search the KB…", questions_one_per_line: "Phrasings (one per line)",
      cancel: "Cancel", save: "Save", replay: "Replay", edit: "Edit", add_to_entry: "Add as phrasing",
      new_entry: "New entry", choose_entry: "Choose an entry…", bad_token: "Invalid token or missing scope.",
      replayed: "Replayed", saved: "Saved; the bot uses it now", nothing: "Nothing here",
      new_entry_title: "New KB entry", edit_entry_title: "Edit entry", no_alarms: "No alarms",
      answer_o: "answered", suggest_o: "suggested", miss_o: "missed", handoff_o: "handed off", lang: "中文",
    },
  };
  const COLORS = ["#0f766e", "#2563eb", "#d97706", "#7c3aed", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
  const $ = (hl) => document.querySelector(`[data-hl="${hl}"]`);
  let lang = (localStorage.getItem("huiliu.lang") || (navigator.language || "zh").slice(0, 2)) === "en" ? "en" : "zh";
  let token = sessionStorage.getItem("huiliu.token") || "";
  let faqs = [];
  let report = null;
  const charts = {};

  const t = (key) => TEXT[lang][key] || key;

  function applyLanguage() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    $("lang").textContent = t("lang");
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(`/api/v1${path}`, init);
    const data = resp.status === 204 ? null : await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = new Error((data && data.error && data.error.message) || `HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }

  function button(label, hl, onClick) {
    const b = el("button", label, { type: "button", "data-hl": hl });
    b.addEventListener("click", onClick);
    return b;
  }

  function fill(tableHl, rows) {
    const body = $(tableHl).querySelector("tbody");
    body.replaceChildren();
    if (!rows.length) {
      const cols = $(tableHl).querySelectorAll("th").length;
      const tr = el("tr");
      tr.append(el("td", t("nothing"), { colspan: cols, class: "muted" }));
      body.append(tr);
      return;
    }
    rows.forEach((cells) => {
      const tr = el("tr");
      cells.forEach((c) => {
        const td = el("td");
        if (c instanceof Node) { td.append(c); td.className = "actions"; } else td.textContent = c == null ? "" : String(c);
        tr.append(td);
      });
      body.append(tr);
    });
  }

  function toast(text) {
    const node = $("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { node.hidden = true; }, 3000);
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB") : "";
  }

  // login -------------------------------------------------------------------------------------------
  async function login(candidate) {
    token = candidate;
    try {
      await api("GET", "/faqs");
      await api("GET", "/reports/summary");
    } catch (err) {
      token = "";
      sessionStorage.removeItem("huiliu.token");
      $("login-error").textContent = err.status === 401 || err.status === 403 ? t("bad_token") : err.message;
      $("login-error").hidden = false;
      return;
    }
    sessionStorage.setItem("huiliu.token", token);
    $("login").hidden = true;
    $("login-error").hidden = true;
    $("dashboard").hidden = false;
    $("tools").hidden = false;
    await refresh();
  }

  function logout() {
    token = "";
    sessionStorage.removeItem("huiliu.token");
    Object.values(charts).forEach((c) => c.destroy());
    Object.keys(charts).forEach((k) => delete charts[k]);
    $("dashboard").hidden = true;
    $("tools").hidden = true;
    $("login").hidden = false;
    $("token").value = "";
  }

  // data --------------------------------------------------------------------------------------------
  async function refresh() {
    const days = Number($("range").value);
    const to = new Date();
    const from = new Date(to.getTime() - (days - 1) * 86400000);
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const day = (d) => d.toLocaleDateString("en-CA", { timeZone: tz });
    const q = new URLSearchParams({ from: day(from), to: day(to), tz });
    report = await api("GET", `/reports/summary?${q}`);
    renderReport();
    await Promise.all([loadFaqs(), loadHealth(), loadQuarantine(), loadDeadLetters()]);
    renderUnanswered();
    document.body.dataset.loaded = String(Date.now());
  }

  function chart(name, config) {
    if (charts[name]) charts[name].destroy();
    charts[name] = new window.Chart($(`chart-${name}`), config);
    $(`chart-${name}`).dataset.points = String(
      config.data.datasets.reduce((n, d) => n + d.data.filter((v) => v > 0).length, 0));
  }

  function renderReport() {
    const inbound = Object.values(report.messages).reduce((n, m) => n + m.inbound, 0);
    $("stat-messages").textContent = inbound;
    $("stat-deflection").textContent = report.deflection_rate == null ? "–" : `${Math.round(report.deflection_rate * 1000) / 10}%`;
    $("stat-answered").textContent = report.bot.answered;
    $("stat-tickets").textContent = report.tickets;
    const fr = report.first_response_s;
    const mins = (s) => (s == null ? "–" : `${Math.round(s / 6) / 10} min`);
    $("stat-response").textContent = `${mins(fr.p50)} / ${mins(fr.p90)}`;
    const channels = Object.keys(report.messages).length ? Object.keys(report.messages) : Object.keys(report.daily[0]?.channels || {});
    chart("volume", {
      type: "bar",
      data: {
        labels: report.daily.map((d) => d.date.slice(5)),
        datasets: channels.map((c, i) => ({
          label: c, backgroundColor: COLORS[i % COLORS.length],
          data: report.daily.map((d) => (d.channels[c] ? d.channels[c].messages : 0)),
        })),
      },
      options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
    const outcomes = [["answer_o", report.bot.answered], ["suggest_o", report.bot.suggested], ["miss_o", report.bot.missed], ["handoff_o", report.bot.handed_off]];
    chart("outcomes", {
      type: "doughnut",
      data: { labels: outcomes.map(([k]) => t(k)), datasets: [{ data: outcomes.map(([, v]) => v), backgroundColor: COLORS }] },
      options: { animation: false, aspectRatio: 2 },
    });
    const reasons = Object.entries(report.handoff_reasons);
    chart("handoffs", {
      type: "bar",
      data: { labels: reasons.map(([k]) => k), datasets: [{ label: t("tickets"), data: reasons.map(([, v]) => v), backgroundColor: COLORS[2] }] },
      options: { animation: false, aspectRatio: 2, indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  async function loadHealth() {
    const resp = await fetch("/readyz");
    const body = await resp.json();
    const alarms = $("alarms");
    alarms.replaceChildren(...(body.alarms.length
      ? body.alarms.map((a) => el("li", `${a.name}${a.subject ? ` (${a.subject})` : ""}: ${a.detail}`))
      : [el("li", t("no_alarms"), { class: "ok" })]));
    fill("health", Object.entries(body.components).map(([name, c]) => {
      const { status, ...rest } = c;
      const detail = Object.entries(rest).map(([k, v]) => `${k}: ${v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
      return [name, status || "", detail];
    }));
  }

  async function loadQuarantine() {
    const { items } = await api("GET", "/quarantine");
    fill("quarantine", items.map((q) => [when(q.received_at), q.inbox, q.reason, button(t("replay"), "replay", async () => {
      try {
        await api("POST", `/quarantine/${encodeURIComponent(q.id)}/replay`);
        toast(t("replayed"));
      } catch (err) { toast(err.message); }
      await loadQuarantine();
    })]));
  }

  async function loadDeadLetters() {
    const { dead_letters: letters } = await api("GET", "/webhooks/dead-letters");
    fill("dead-letters", letters.map((d) => [when(d.failed_at), d.subscription, d.error, button(t("replay"), "replay-dead", async () => {
      try {
        await api("POST", `/webhooks/dead-letters/${encodeURIComponent(d.id)}/replay`);
        toast(t("replayed"));
      } catch (err) { toast(err.message); }
      await loadDeadLetters();
    })]));
  }

  async function loadFaqs() {
    faqs = (await api("GET", "/faqs")).faqs;
    renderFaqs();
  }

  function renderFaqs() {
    const needle = $("kb-search").value.trim().toLowerCase();
    const shown = faqs.filter((f) => !needle || [f.id, f.answer, ...f.questions].some((s) => s.toLowerCase().includes(needle)));
    fill("kb", shown.map((f) => [f.id, f.questions.join(" / "), f.answer, button(t("edit"), "edit", () => openEditor(f, null))]));
  }

  function renderUnanswered() {
    fill("unanswered", report.unanswered.map((u) => {
      const actions = el("span");
      const pick = el("select", null, { "data-hl": "pick-entry" });
      pick.append(el("option", t("choose_entry"), { value: "" }));
      faqs.forEach((f) => pick.append(el("option", `${f.id} · ${f.questions[0]}`, { value: f.id })));
      actions.append(pick, button(t("add_to_entry"), "add-phrasing", async () => {
        const entry = faqs.find((f) => f.id === pick.value);
        if (!entry) return;
        await save(entry.id, { ...entry, questions: [...entry.questions, u.question] }, false);
      }), button(t("new_entry"), "new-entry", () => openEditor(null, u.question)));
      return [u.question, u.count, u.examples.join(" / "), actions];
    }));
  }

  // editing the KB (the FAQ admin API) ---------------------------------------------------------------
  function openEditor(entry, question) {
    const dialog = $("editor");
    $("editor-title").textContent = entry ? t("edit_entry_title") : t("new_entry_title");
    $("editor-id").value = entry ? entry.id : "";
    $("editor-id").readOnly = Boolean(entry);
    $("editor-questions").value = entry ? entry.questions.join("\n") : question || "";
    $("editor-answer").value = entry ? entry.answer : "";
    $("editor-error").hidden = true;
    dialog.dataset.mode = entry ? "edit" : "new";
    dialog.showModal();
  }

  async function save(id, body, isNew) {
    try {
      if (isNew) await api("POST", "/faqs", body);
      else await api("PUT", `/faqs/${encodeURIComponent(id)}`, body);
    } catch (err) {
      $("editor-error").textContent = err.message;
      $("editor-error").hidden = false;
      toast(err.message);
      return false;
    }
    toast(t("saved"));
    await loadFaqs();
    renderUnanswered();
    return true;
  }

  $("editor-form").addEventListener("submit", async (event) => {
    if (event.submitter && event.submitter.value === "cancel") return;
    event.preventDefault();
    const dialog = $("editor");
    const id = $("editor-id").value.trim();
    const existing = faqs.find((f) => f.id === id);
    const body = {
      id,
      questions: $("editor-questions").value.split("\n").map((s) => s.trim()).filter(Boolean),
      answer: $("editor-answer").value.trim(),
    };
    if (existing) { body.keywords = existing.keywords; body.tags = existing.tags; }
    if (await save(id, body, dialog.dataset.mode === "new")) dialog.close();
  });

  // wiring ------------------------------------------------------------------------------------------
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("token").value.trim());
  });
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => refresh());
  $("range").addEventListener("change", () => refresh());
  $("kb-search").addEventListener("input", renderFaqs);
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("huiliu.lang", lang);
    applyLanguage();
    if (report) refresh(); // every list and chart again, in the new language
  });
  applyLanguage();
  if (token) login(token);
})();
