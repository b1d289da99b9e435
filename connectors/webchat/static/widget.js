/*!
 * Huiliu web chat widget — plain JavaScript (ES2017), no dependencies, no build step.
 *
 * Usage:
 *   <link rel="stylesheet" href="/chat/widget.css">
 *   <div id="huiliu-chat"></div>
 *   <script src="/chat/widget.js" [data-ws-url="wss://example.com/chat/ws"]></script>
 *
 * or mount by hand:  HuiliuChat.mount(element, { wsUrl: "wss://…/chat/ws" })
 *
 * Wire protocol: docs/webchat-protocol.md.  All server-provided text is rendered
 * with textContent — never innerHTML.
 */
(function (window, document) {
  'use strict';

  if (window.HuiliuChat && window.HuiliuChat.mount) return; // loaded twice

  // Captured while the script is being evaluated; null for scripts injected as modules.
  var SCRIPT = document.currentScript;

  var DEFAULTS = {
    wsUrl: null,               // override the derived WebSocket URL
    title: '在线客服',
    subtitle: 'Customer support',
    maxTextChars: 4000,        // protocol limit on message text (Unicode code points)
    maxFrameBytes: 8192,       // server's max frame size (UTF-8 bytes); default 8 KiB
    backoffBaseMs: 500,        // reconnect: first delay
    backoffMaxMs: 30000,       // reconnect: cap
    pingIntervalMs: 25000,     // send a ping after this long without any server frame
    pongTimeoutMs: 10000,      // …and drop the socket if nothing arrives this long after it
    typingThrottleMs: 3000,    // resend typing:on at most this often while typing
    typingIdleMs: 2500,        // send typing:off after this long without keystrokes
    remoteTypingTimeoutMs: 12000, // hide the remote typing indicator if no 'off' arrives
    rateLimitRetryMs: 4000,    // resend unacked messages this long after 'rate_limited'
    storage: undefined,        // a Storage-like object; default window.localStorage
  };

  var T = {
    placeholder: '请输入您的问题…（Enter 发送，Shift+Enter 换行）/ Type your question…',
    send: '发送',
    sendTitle: '发送 / Send',
    typing: '客服正在输入… / typing…',
    conn: {
      connecting: '连接中… / Connecting…',
      online: '在线 / Online',
      offline: '已断开，正在重连… / Reconnecting…',
    },
    status: {
      bot: '智能助手为您服务 / Chatting with our assistant',
      waiting_for_agent: '已转人工，请稍候 / Waiting for an agent',
      open: '人工客服已接入 / An agent has joined',
      resolved: '会话已结束 / Conversation resolved',
    },
    author: { customer: '我 / Me', bot: '智能助手 / Assistant', agent: '客服 / Agent', system: '系统 / System' },
    state: { pending: '发送中… / Sending…', sent: '已送达 / Delivered', failed: '未发送 / Not sent' },
    suggestionsLabel: '您是不是想问 / Did you mean',
    surveyLabel: '满意度评价 / Rate our service',
    newConversation: '已开始新的会话 / A new conversation has started',
    errors: {
      frame_too_large: '消息太长，未能发送 / Message too long',
      bad_json: '消息格式错误 / Malformed message',
      bad_frame: '消息无效，未能发送 / Invalid message',
      unknown_type: '不支持的操作 / Unsupported action',
      hello_required: '连接尚未就绪 / Connection not ready',
      bad_token: '会话已过期，正在重新连接 / Session expired, reconnecting',
      rate_limited: '发送太频繁，请稍候 / Too many messages, please wait',
      store_unavailable: '服务暂时繁忙，稍后自动重发 / Service busy, resending shortly',
      too_long: '消息太长（最多 {n} 字）/ Message too long (max {n} characters)',
    },
  };

  var DURABLE_AUTHORS = { bot: 1, agent: 1, system: 1 };
  var STATUSES = { bot: 1, waiting_for_agent: 1, open: 1, resolved: 1 };

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, k) && attrs[k] != null) node.setAttribute(k, attrs[k]);
      }
    }
    if (text != null) node.textContent = String(text);
    return node;
  }

  function randomId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    var s = 'c';
    for (var i = 0; i < bytes.length; i++) s += (bytes[i] + 0x100).toString(16).slice(1);
    return s; // 25 chars, [a-f0-9c] — within the protocol's [A-Za-z0-9_-]{1,64}
  }

  function codePoints(s) { return Array.from(s).length; }

  function utf8Bytes(s) {
    return window.TextEncoder ? new TextEncoder().encode(s).length : unescape(encodeURIComponent(s)).length;
  }

  function formatTime(iso) {
    if (!iso) return null;
    var d = new Date(iso);
    if (isNaN(d.getTime())) return null;
    return ('0' + d.getHours()).slice(-2) + ':' + ('0' + d.getMinutes()).slice(-2); // local 24h HH:MM
  }

  /** WebSocket URL: option > element data-ws-url > script data-ws-url > next to the script > next to the page. */
  function resolveWsUrl(element, options) {
    var explicit = options.wsUrl
      || (element && element.getAttribute('data-ws-url'))
      || (SCRIPT && SCRIPT.getAttribute('data-ws-url'));
    var base = (SCRIPT && SCRIPT.src) || window.location.href;
    var url = new URL(explicit || 'ws', base); // relative overrides resolve against the script too
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    url.hash = '';
    return url.href;
  }

  function memoryStorage() {
    var data = {};
    return {
      getItem: function (k) { return Object.prototype.hasOwnProperty.call(data, k) ? data[k] : null; },
      setItem: function (k, v) { data[k] = String(v); },
      removeItem: function (k) { delete data[k]; },
    };
  }

  function pickStorage(opt) {
    if (opt) return opt;
    try {
      var ls = window.localStorage;
      var probe = '__huiliu_probe__';
      ls.setItem(probe, '1');
      ls.removeItem(probe);
      return ls;
    } catch (e) {
      return memoryStorage(); // storage disabled (privacy mode, sandboxed iframe…)
    }
  }

  // ---------------------------------------------------------------- the widget

  class Chat {
    constructor(root, options) {
      this.o = Object.assign({}, DEFAULTS, options || {});
      this.root = root;
      this.wsUrl = resolveWsUrl(root, this.o);
      this.storage = pickStorage(this.o.storage);
      this.storageKey = 'huiliu-chat:v1:' + this.wsUrl;

      var saved = this._load();
      this.token = typeof saved.token === 'string' ? saved.token : null;
      this.lastSeq = Number.isInteger(saved.last_seq) && saved.last_seq > 0 ? saved.last_seq : 0;
      this.visitorId = saved.visitor_id || null;
      this.conversationId = saved.conversation_id || null;
      /** unacked outgoing frames, in send order: {type, id, text, faq_id?} */
      this.pending = Array.isArray(saved.pending) ? saved.pending.filter(function (p) { return p && p.id && p.type; }) : [];
      this.resending = false; // a "resending shortly" notice is up for the pending messages

      this.ws = null;
      this.ready = false;        // true between 'welcome' and close
      this.attempt = 0;          // reconnect attempt counter (backoff exponent)
      this.destroyed = false;
      this.lastRx = 0;
      this.pingSentAt = 0;
      this.typingOn = false;
      this.typingSentAt = 0;
      this.timers = {};

      this._build();
      for (var i = 0; i < this.pending.length; i++) this._renderOwn(this.pending[i].id, this.pending[i].text, 'pending');

      this._onOnline = () => { if (!this.ws) this._reconnectNow(); };
      this._onVisible = () => { if (document.visibilityState === 'visible' && !this.ws) this._reconnectNow(); };
      window.addEventListener('online', this._onOnline);
      document.addEventListener('visibilitychange', this._onVisible);

      this._connect();
    }

    // ------------------------------------------------------------ persistence

    _load() {
      try {
        var raw = this.storage.getItem(this.storageKey);
        var v = raw ? JSON.parse(raw) : null;
        return v && typeof v === 'object' ? v : {};
      } catch (e) {
        return {};
      }
    }

    _save() {
      // Another tab of the same visitor may have advanced last_seq; never move it backwards
      // unless our identity changed.
      var stored = this._load();
      var lastSeq = this.lastSeq;
      if (stored.token === this.token && Number.isInteger(stored.last_seq) && stored.last_seq > lastSeq) {
        lastSeq = stored.last_seq;
      }
      try {
        this.storage.setItem(this.storageKey, JSON.stringify({
          token: this.token,
          last_seq: lastSeq,
          visitor_id: this.visitorId,
          conversation_id: this.conversationId,
          pending: this.pending,
        }));
      } catch (e) { /* quota / disabled: keep going in memory */ }
    }

    // ------------------------------------------------------------ DOM

    _build() {
      var root = this.root;
      while (root.firstChild) root.removeChild(root.firstChild);
      root.classList.add('hl-chat');
      root.setAttribute('data-hl', 'root');
      root.setAttribute('data-conn', 'connecting');
      root.setAttribute('lang', root.getAttribute('lang') || 'zh-CN');

      var head = el('div', { class: 'hl-head' });
      var titles = el('div', { class: 'hl-titles' });
      titles.appendChild(el('div', { class: 'hl-title' }, this.o.title));
      if (this.o.subtitle) titles.appendChild(el('div', { class: 'hl-subtitle' }, this.o.subtitle));
      this.connEl = el('div', { class: 'hl-conn', 'data-hl': 'conn' });
      this.connEl.appendChild(el('i', { class: 'hl-dot', 'aria-hidden': 'true' }));
      this.connText = el('span', null, T.conn.connecting);
      this.connEl.appendChild(this.connText);
      head.appendChild(titles);
      head.appendChild(this.connEl);

      this.statusEl = el('div', { class: 'hl-status', 'data-hl': 'status', role: 'status' }, '');
      this.statusEl.hidden = true;

      this.logEl = el('div', { class: 'hl-log', 'data-hl': 'log', role: 'log', 'aria-live': 'polite', tabindex: '0' });

      this.typingEl = el('div', { class: 'hl-typing', 'data-hl': 'typing', 'aria-live': 'polite' });
      var dots = el('span', { class: 'hl-dots', 'aria-hidden': 'true' });
      dots.appendChild(el('i'));
      dots.appendChild(el('i'));
      dots.appendChild(el('i'));
      this.typingEl.appendChild(dots);
      this.typingEl.appendChild(el('span', { class: 'hl-typing-text' }, T.typing));
      this.typingEl.hidden = true;

      this.errorEl = el('div', { class: 'hl-error', 'data-hl': 'error', role: 'alert' });
      this.errorEl.hidden = true;

      var form = el('form', { class: 'hl-composer', autocomplete: 'off' });
      this.inputEl = el('textarea', {
        class: 'hl-input', 'data-hl': 'input', rows: '1', maxlength: String(this.o.maxTextChars),
        placeholder: T.placeholder, 'aria-label': T.placeholder, enterkeyhint: 'send',
      });
      this.sendEl = el('button', { class: 'hl-send', 'data-hl': 'send', type: 'submit', title: T.sendTitle, 'aria-label': T.sendTitle }, T.send);
      form.appendChild(this.inputEl);
      form.appendChild(this.sendEl);

      form.addEventListener('submit', (e) => { e.preventDefault(); this.sendText(this.inputEl.value); });
      this.inputEl.addEventListener('keydown', (e) => {
        // Enter sends; Shift+Enter is a newline; never send while an IME is composing (拼音 input!).
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          this.sendText(this.inputEl.value);
        }
      });
      this.inputEl.addEventListener('input', () => { this._autosize(); this._onTypingInput(); });
      this.inputEl.addEventListener('blur', () => this._stopTyping());
      this.logEl.addEventListener('click', (e) => {
        var btn = e.target && e.target.closest ? e.target.closest('[data-hl="suggestion"]') : null;
        if (btn && this.logEl.contains(btn) && !btn.disabled) this._pickSuggestion(btn);
        var rate = e.target && e.target.closest ? e.target.closest('[data-hl="survey"]') : null;
        if (rate && this.logEl.contains(rate) && !rate.disabled) {
          var group = rate.parentNode.querySelectorAll('[data-hl="survey"]');
          for (var j = 0; j < group.length; j++) group[j].disabled = true;
          rate.classList.add('hl-chosen');
          this.sendText(rate.getAttribute('data-value'));
        }
      });

      root.appendChild(head);
      root.appendChild(this.statusEl);
      root.appendChild(this.logEl);
      root.appendChild(this.typingEl);
      root.appendChild(this.errorEl);
      root.appendChild(form);
    }

    _autosize() {
      var i = this.inputEl;
      i.style.height = 'auto';
      i.style.height = Math.min(i.scrollHeight, 132) + 'px';
    }

    _append(node, forceScroll) {
      var log = this.logEl;
      var nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
      log.appendChild(node);
      if (forceScroll || nearBottom) log.scrollTop = log.scrollHeight;
    }

    _renderOwn(id, text, state) {
      var msg = el('div', {
        class: 'hl-msg hl-msg--customer', 'data-hl': 'msg', 'data-author': 'customer',
        'data-id': id, 'data-state': state,
      });
      msg.appendChild(el('div', { class: 'hl-bubble', 'data-hl': 'text' }, text));
      var meta = el('div', { class: 'hl-meta' });
      meta.appendChild(el('span', { class: 'hl-time' }, formatTime(new Date().toISOString())));
      meta.appendChild(el('span', { class: 'hl-state', 'data-hl': 'state', title: T.state[state] }, T.state[state]));
      msg.appendChild(meta);
      this._append(msg, true);
      return msg;
    }

    _ownEl(id) {
      var nodes = this.logEl.querySelectorAll('[data-hl="msg"][data-author="customer"]');
      for (var i = 0; i < nodes.length; i++) if (nodes[i].getAttribute('data-id') === id) return nodes[i];
      return null;
    }

    _setOwnState(id, state, extra) {
      var msg = this._ownEl(id);
      if (!msg) return;
      msg.setAttribute('data-state', state);
      if (extra && extra.message_id) msg.setAttribute('data-message-id', extra.message_id);
      var s = msg.querySelector('[data-hl="state"]');
      if (s) { s.textContent = T.state[state]; s.title = T.state[state]; }
    }

    _shown(messageId) {
      if (!messageId) return false;
      var nodes = this.logEl.querySelectorAll('[data-hl="msg"][data-message-id]');
      for (var i = 0; i < nodes.length; i++) {
        if (nodes[i].getAttribute('data-author') !== 'customer' && nodes[i].getAttribute('data-message-id') === messageId) {
          return true;
        }
      }
      return false;
    }

    _renderMessage(f) {
      var author = DURABLE_AUTHORS[f.author] ? f.author : 'system';
      var msg = el('div', {
        class: 'hl-msg hl-msg--' + author, 'data-hl': 'msg', 'data-author': author,
        'data-seq': String(f.seq), 'data-message-id': f.message_id,
      });
      if (author !== 'system') msg.appendChild(el('div', { class: 'hl-who' }, T.author[author]));
      msg.appendChild(el('div', { class: 'hl-bubble', 'data-hl': 'text' }, typeof f.text === 'string' ? f.text : ''));

      var sugg = Array.isArray(f.suggestions) ? f.suggestions.filter(function (s) {
        return s && (typeof s.faq_id === 'string' || typeof s.faq_id === 'number') && typeof s.question === 'string';
      }) : [];
      if (sugg.length) {
        var box = el('div', { class: 'hl-suggestions', role: 'group', 'aria-label': T.suggestionsLabel });
        box.appendChild(el('div', { class: 'hl-suggestions-label' }, T.suggestionsLabel));
        for (var i = 0; i < sugg.length; i++) {
          box.appendChild(el('button', {
            type: 'button', class: 'hl-suggestion', 'data-hl': 'suggestion', 'data-faq-id': String(sugg[i].faq_id),
          }, sugg[i].question));
        }
        msg.appendChild(box);
      }
      var rates = Array.isArray(f.survey) ? f.survey.filter(function (o) {
        return o && typeof o.label === 'string' && typeof o.value === 'string';
      }) : [];
      if (rates.length) {
        var survey = el('div', { class: 'hl-suggestions hl-survey', role: 'group', 'aria-label': T.surveyLabel });
        for (var k = 0; k < rates.length; k++) {
          survey.appendChild(el('button', {
            type: 'button', class: 'hl-suggestion', 'data-hl': 'survey', 'data-value': rates[k].value,
          }, rates[k].label));
        }
        msg.appendChild(survey);
      }
      var time = formatTime(f.at);
      if (time) msg.appendChild(el('div', { class: 'hl-meta', title: String(f.at) }, time));
      this._append(msg, false);
      if (author !== 'system') this._showTyping(false);
    }

    _renderNote(text, seq) {
      this._append(el('div', { class: 'hl-note', 'data-hl': 'note', 'data-seq': seq != null ? String(seq) : null }, text), false);
    }

    _setConn(state) {
      this.root.setAttribute('data-conn', state);
      this.connText.textContent = T.conn[state] || state;
    }

    _setStatus(status) {
      if (!STATUSES[status]) return;
      this.status = status;
      this.root.setAttribute('data-status', status);
      this.statusEl.textContent = T.status[status];
      this.statusEl.hidden = false;
    }

    _showTyping(on) {
      clearTimeout(this.timers.remoteTyping);
      this.typingEl.hidden = !on;
      if (on) {
        var log = this.logEl;
        if (log.scrollHeight - log.scrollTop - log.clientHeight < 80) log.scrollTop = log.scrollHeight;
        this.timers.remoteTyping = setTimeout(() => { this.typingEl.hidden = true; }, this.o.remoteTypingTimeoutMs);
      }
    }

    _showError(text) {
      clearTimeout(this.timers.error);
      this.errorEl.textContent = text;
      this.errorEl.hidden = false;
      this.timers.error = setTimeout(() => { this.errorEl.hidden = true; }, 6000);
    }

    // ------------------------------------------------------------ connection

    _connect() {
      if (this.destroyed) return;
      clearTimeout(this.timers.reconnect);
      var ws;
      try {
        ws = new WebSocket(this.wsUrl);
      } catch (e) {
        this._scheduleReconnect();
        return;
      }
      this.ws = ws;
      this.ready = false;
      this._setConn('connecting');

      ws.onopen = () => {
        if (ws !== this.ws) return;
        this.lastRx = Date.now();
        this.pingSentAt = 0;
        this._sendRaw({ type: 'hello', token: this.token, last_seq: this.lastSeq });
        this._startHeartbeat();
      };
      ws.onmessage = (ev) => {
        if (ws !== this.ws) return;
        this.lastRx = Date.now();
        var f;
        try { f = JSON.parse(ev.data); } catch (e) { return; }
        if (f && typeof f === 'object' && typeof f.type === 'string') this._onFrame(f);
      };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return;
        if (ev.code === 4401) this._resetIdentity();
        // 4429: too many new visitors from this address; wait what the error frame before it said.
        var wait = ev.code === 4429 ? (this.retryAfterMs || this.o.backoffMaxMs) : undefined;
        this._dropped(ev.code === 4401 ? 0 : wait);
      };
      ws.onerror = function () { /* a close event always follows */ };
    }

    /** The current socket is gone (closed, or declared dead): clean up and schedule a reconnect. */
    _dropped(delay) {
      var ws = this.ws;
      this.ws = null;
      this.ready = false;
      this.typingOn = false;
      this._stopHeartbeat();
      this._showTyping(false);
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try { ws.close(); } catch (e) { /* ignore */ }
      }
      if (this.destroyed) return;
      this._setConn('offline');
      this._scheduleReconnect(delay);
    }

    _scheduleReconnect(delay) {
      clearTimeout(this.timers.reconnect);
      if (delay == null) {
        // capped exponential backoff with "equal jitter": [cap/2, cap)
        var cap = Math.min(this.o.backoffMaxMs, this.o.backoffBaseMs * Math.pow(2, this.attempt));
        delay = cap / 2 + Math.random() * cap / 2;
      }
      this.attempt = Math.min(this.attempt + 1, 30);
      this.timers.reconnect = setTimeout(() => this._connect(), delay);
    }

    _reconnectNow() {
      if (this.destroyed || this.ws) return;
      this.attempt = 0;
      this._connect();
    }

    _startHeartbeat() {
      this._stopHeartbeat();
      var tick = Math.max(250, Math.min(5000, this.o.pingIntervalMs / 2));
      this.timers.heartbeat = setInterval(() => {
        var now = Date.now();
        if (this.pingSentAt && this.lastRx < this.pingSentAt) {
          if (now - this.pingSentAt > this.o.pongTimeoutMs) this._dropped(); // half-open socket
        } else if (now - this.lastRx >= this.o.pingIntervalMs) {
          if (this.ready) { this.pingSentAt = now; this._sendRaw({ type: 'ping' }); }
          else if (now - this.lastRx > this.o.pingIntervalMs + this.o.pongTimeoutMs) this._dropped(); // no welcome
        }
      }, tick);
    }

    _stopHeartbeat() { clearInterval(this.timers.heartbeat); }

    _sendRaw(frame) {
      if (!this.ws || this.ws.readyState !== 1) return false;
      try {
        this.ws.send(JSON.stringify(frame));
        return true;
      } catch (e) {
        return false;
      }
    }

    _resetIdentity() {
      this.token = null;
      this.lastSeq = 0;
      this.visitorId = null;
      this.conversationId = null;
      this._save();
    }

    // ------------------------------------------------------------ incoming frames

    _onFrame(f) {
      switch (f.type) {
        case 'welcome': return this._onWelcome(f);
        case 'message':
        case 'status': return this._onDurable(f);
        case 'ack': return this._onAck(f);
        case 'typing':
          if (f.author === 'bot' || f.author === 'agent') this._showTyping(!!f.on);
          return;
        case 'error': return this._onError(f);
        case 'pong': return;
        default: return; // unknown frame types are ignored (forward compatibility)
      }
    }

    _onWelcome(f) {
      var newIdentity = !!this.token && f.token !== this.token;
      if (newIdentity || (Number.isInteger(f.seq) && f.seq < this.lastSeq)) {
        // The server started a different visitor (or lost frames we have seen): its seq
        // numbering starts over, so forget ours. Old entries keep their seq as data-prev-seq.
        this.lastSeq = Number.isInteger(f.seq) && !newIdentity ? f.seq : 0;
        var old = this.logEl.querySelectorAll('[data-seq]');
        for (var i = 0; i < old.length; i++) {
          old[i].setAttribute('data-prev-seq', old[i].getAttribute('data-seq'));
          old[i].removeAttribute('data-seq');
        }
        if (old.length) this._renderNote(T.newConversation, null);
      }
      if (typeof f.token === 'string') this.token = f.token;
      this.visitorId = f.visitor_id || this.visitorId;
      this.conversationId = f.conversation_id || this.conversationId;
      this.ready = true;
      this.attempt = 0;
      this._setConn('online');
      if (f.status) this._setStatus(f.status);
      this._save();
      this._flushPending();
    }

    _onDurable(f) {
      var seq = f.seq;
      if (!Number.isInteger(seq) || seq <= this.lastSeq) return; // already rendered
      if (seq !== this.lastSeq + 1 && window.console) {
        console.warn('[huiliu-chat] seq gap: expected', this.lastSeq + 1, 'got', seq);
      }
      this.lastSeq = seq;
      this._save();
      if (f.type === 'message') {
        // A reply sent again after the server died mid-send comes as a new frame with the same message.
        if (!this._shown(f.message_id)) this._renderMessage(f);
      } else if (STATUSES[f.status]) {
        var changed = f.status !== this.status;
        this._setStatus(f.status);
        if (changed) this._renderNote(T.status[f.status], seq);
      }
    }

    _onAck(f) {
      var idx = this._pendingIndex(f.id);
      if (idx >= 0) {
        this.pending.splice(idx, 1);
        this._save();
      }
      this._setOwnState(f.id, 'sent', f);
      if (this.resending && !this.pending.length) {
        // "Resending shortly" was about these messages: all are in now, so the notice is stale.
        this.resending = false;
        clearTimeout(this.timers.error);
        this.errorEl.hidden = true;
      }
    }

    _onError(f) {
      var code = f.code;
      if (code === 'bad_token') {
        this._resetIdentity(); // the server closes with 4401 next; we reconnect as a new visitor
      } else if (code === 'rate_limited' && typeof f.retry_after_s === 'number' && !f.id) {
        this.retryAfterMs = f.retry_after_s * 1000; // a refused hello: the server closes with 4429 next
      } else if (code === 'rate_limited' || code === 'store_unavailable') {
        // Resending is idempotent (same client ids), so just try the unacked ones again later: after the
        // server's retry_after_s when it says (a store outage), else rateLimitRetryMs.
        var later = typeof f.retry_after_s === 'number' ? f.retry_after_s * 1000 : this.o.rateLimitRetryMs;
        clearTimeout(this.timers.retry);
        this.timers.retry = setTimeout(() => this._flushPending(), later);
      } else if (f.id && (code === 'bad_frame' || code === 'frame_too_large')) {
        // Optional 'id' on errors (see protocol doc): this message will never be accepted.
        var idx = this._pendingIndex(f.id);
        if (idx >= 0) { this.pending.splice(idx, 1); this._save(); }
        this._setOwnState(f.id, 'failed');
      }
      this._showError(T.errors[code] || (typeof f.message === 'string' ? f.message : String(code)));
      this.resending = code === 'rate_limited' || code === 'store_unavailable';
    }

    // ------------------------------------------------------------ outgoing

    _pendingIndex(id) {
      for (var i = 0; i < this.pending.length; i++) if (this.pending[i].id === id) return i;
      return -1;
    }

    _frameFor(p) {
      return p.type === 'pick' ? { type: 'pick', id: p.id, faq_id: p.faq_id } : { type: 'message', id: p.id, text: p.text };
    }

    _flushPending() {
      if (!this.ready) return;
      for (var i = 0; i < this.pending.length; i++) this._sendRaw(this._frameFor(this.pending[i]));
    }

    _queue(p) {
      this.pending.push(p);
      this._save();
      this._renderOwn(p.id, p.text, 'pending');
      if (this.ready) this._sendRaw(this._frameFor(p));
    }

    /** Send a visitor message. Returns the client message id, or null if nothing was sent. */
    sendText(raw) {
      var text = String(raw == null ? '' : raw).replace(/^\s+|\s+$/g, '');
      if (!text) return null;
      var id = randomId();
      if (codePoints(text) > this.o.maxTextChars) {
        this._showError(T.errors.too_long.replace(/\{n\}/g, this.o.maxTextChars));
        return null;
      }
      if (utf8Bytes(JSON.stringify({ type: 'message', id: id, text: text })) > this.o.maxFrameBytes) {
        this._showError(T.errors.frame_too_large); // e.g. ~2700+ CJK characters exceed 8 KiB of UTF-8
        return null;
      }
      this._stopTyping();
      this.inputEl.value = '';
      this._autosize();
      this._queue({ type: 'message', id: id, text: text });
      return id;
    }

    _pickSuggestion(btn) {
      var group = btn.parentNode;
      var all = group.querySelectorAll('[data-hl="suggestion"]');
      for (var i = 0; i < all.length; i++) all[i].disabled = true;
      btn.setAttribute('aria-pressed', 'true');
      btn.classList.add('hl-chosen');
      this._queue({ type: 'pick', id: randomId(), faq_id: btn.getAttribute('data-faq-id'), text: btn.textContent });
    }

    _onTypingInput() {
      if (!this.ready) return;
      if (!this.inputEl.value.trim()) { this._stopTyping(); return; }
      var now = Date.now();
      if (!this.typingOn || now - this.typingSentAt >= this.o.typingThrottleMs) {
        this.typingOn = true;
        this.typingSentAt = now;
        this._sendRaw({ type: 'typing', on: true });
      }
      clearTimeout(this.timers.typingIdle);
      this.timers.typingIdle = setTimeout(() => this._stopTyping(), this.o.typingIdleMs);
    }

    _stopTyping() {
      clearTimeout(this.timers.typingIdle);
      if (!this.typingOn) return;
      this.typingOn = false;
      if (this.ready) this._sendRaw({ type: 'typing', on: false });
    }

    /** Tear the widget down (closes the socket, removes listeners; keeps stored state). */
    destroy() {
      this.destroyed = true;
      for (var k in this.timers) { clearTimeout(this.timers[k]); clearInterval(this.timers[k]); }
      window.removeEventListener('online', this._onOnline);
      document.removeEventListener('visibilitychange', this._onVisible);
      this._dropped();
      var root = this.root;
      while (root.firstChild) root.removeChild(root.firstChild);
      root.classList.remove('hl-chat');
      ['data-hl', 'data-conn', 'data-status'].forEach(function (a) { root.removeAttribute(a); });
      root.__huiliuChat = null;
    }
  }

  function mount(element, options) {
    if (typeof element === 'string') element = document.querySelector(element);
    if (!element) throw new Error('HuiliuChat.mount: element not found');
    if (element.__huiliuChat) return element.__huiliuChat;
    var chat = new Chat(element, options);
    element.__huiliuChat = chat;
    var api = {
      send: function (text) { return chat.sendText(text); },
      destroy: function () { chat.destroy(); element.__huiliuChat = null; },
      get wsUrl() { return chat.wsUrl; },
      get connected() { return chat.ready; },
      get lastSeq() { return chat.lastSeq; },
      get token() { return chat.token; },
    };
    element.__huiliuChat = api;
    return api;
  }

  window.HuiliuChat = { mount: mount, version: '1' };

  function autoMount() {
    var target = document.getElementById('huiliu-chat');
    if (target && !target.__huiliuChat) mount(target, {});
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', autoMount);
  else autoMount();
})(window, document);
