(function () {
  "use strict";
  // Everything a file name or a tag holds goes on the page through textContent or as a
  // percent-encoded link: never as markup.
  var D = JSON.parse(document.getElementById("review-data").textContent);
  var R = D.rows, N = R.length, F = D.folders, A = D.actions, G = D.genres;
  var ROW_H = 30, OVERSCAN = 10, UNSURE = 1, DISAGREES = 2, TICKABLE = 4;
  var ticked = new Uint8Array(N), nTicked = 0;
  var view = [];
  var st = { text: "", genre: -1, action: -1, min: 0, max: 1, listen: false, ticked: false, pair: null,
             sort: null, desc: false };
  var $ = function (id) { return document.getElementById(id); };
  var scroller = $("scroller"), body = $("body"), spacer = $("spacer");

  // line breaks, tabs and the invisible direction marks are shown as visible signs
  var BIDI = /[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]/g;
  function shown(s) {
    return String(s).replace(/\r\n|\r|\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(BIDI, function (c) {
      return "\u27e8U+" + c.charCodeAt(0).toString(16).toUpperCase() + "\u27e9";
    });
  }
  function topGenre(r) { return r[3].length ? r[3][0] : (r[5].length ? r[5][0][0] : null); }
  function fullPath(r) { var d = F[r[0]][1]; return d.charAt(d.length - 1) === "/" ? d + r[1] : d + "/" + r[1]; }
  function pct(p) { return Math.round(p * 100) + "%"; }
  function fmtTime(s) { var m = Math.floor(s / 60), x = Math.floor(s % 60); return m + ":" + (x < 10 ? "0" : "") + x; }

  var hay = new Array(N);
  for (var i = 0; i < N; i++) hay[i] = (F[R[i][0]][0] + "/" + R[i][1]).toLowerCase();

  // --- columns and sorting ---------------------------------------------------------------
  var COLS = [
    { id: "tick", title: "", cls: "tickc" },
    { id: "play", title: "", cls: "playc" },
    { id: "folder", title: "folder", key: function (r) { return F[r[0]][0].toLowerCase() + "\u0000" + r[1].toLowerCase(); } },
    { id: "name", title: "name", key: function (r) { return r[1].toLowerCase(); } },
    { id: "current", title: "current", key: function (r) { return r[2].join("; ").toLowerCase(); } },
    { id: "proposed", title: "proposed", key: function (r) { return r[3].join("; ").toLowerCase(); } },
    { id: "confidence", title: "confidence", key: function (r) { return r[4] === null ? -1 : r[4]; } },
    { id: "top", title: "top 3", key: function (r) { return r[5].length ? r[5][0][0].toLowerCase() : ""; } },
    { id: "action", title: "action", key: function (r) { return A[r[6]]; } },
    { id: "error", title: "error", key: function (r) { return r[7] || ""; } }
  ];
  var keyCache = {};
  function keysFor(col) {
    if (!keyCache[col.id]) {
      var k = new Array(N);
      for (var i = 0; i < N; i++) k[i] = col.key(R[i]);
      keyCache[col.id] = k;
    }
    return keyCache[col.id];
  }

  var head = $("head");
  COLS.forEach(function (c, j) {
    var h = document.createElement("div");
    h.setAttribute("role", "columnheader");
    h.textContent = c.title;
    if (c.key) {
      h.title = "sort by " + c.title;
      h.tabIndex = 0;
      var sortBy = function () {
        if (st.sort === j) st.desc = !st.desc; else { st.sort = j; st.desc = false; }
        apply();
      };
      h.addEventListener("click", sortBy);
      h.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(); } });
    }
    head.appendChild(h);
  });

  // --- filters ---------------------------------------------------------------------------
  function option(sel, value, text) {
    var o = document.createElement("option");
    o.value = value; o.textContent = shown(text); sel.appendChild(o);
  }
  G.forEach(function (g, k) { option($("f-genre"), k, g); });
  A.forEach(function (a, k) { option($("f-action"), k, a); });

  function passes(i) {
    var r = R[i];
    if (st.listen && !(r[8] & (UNSURE | DISAGREES))) return false;
    if (st.ticked && !ticked[i]) return false;
    if (st.action >= 0 && r[6] !== st.action) return false;
    if (st.min > 0 || st.max < 1) {
      if (r[4] === null || r[4] < st.min || r[4] > st.max) return false;
    }
    if (st.genre >= 0) {
      var g = G[st.genre];
      if (r[2].indexOf(g) < 0 && r[3].indexOf(g) < 0) return false;
    }
    if (st.pair) {
      if (!r[2].length || r[2][0] !== st.pair[0]) return false;
      var t = topGenre(r);
      if ((t === null ? D.matrix.none : t) !== st.pair[1]) return false;
    }
    if (st.text && hay[i].indexOf(st.text) < 0) return false;
    return true;
  }

  function apply() {
    var out = [];
    for (var i = 0; i < N; i++) if (passes(i)) out.push(i);
    if (st.sort !== null) {
      var k = keysFor(COLS[st.sort]), s = st.desc ? -1 : 1;
      out.sort(function (a, b) { var x = k[a], y = k[b]; return x < y ? -s : x > y ? s : a - b; });
    }
    view = out;
    Array.prototype.forEach.call(head.children, function (h, j) {
      h.classList.toggle("sorted", st.sort === j);
      h.classList.toggle("desc", st.sort === j && st.desc);
    });
    spacer.style.height = (view.length * ROW_H) + "px";
    scroller.style.height = Math.min(640, Math.max(view.length, 4) * ROW_H + 2) + "px";
    if (scroller.scrollTop > view.length * ROW_H) scroller.scrollTop = 0;
    counts();
    render();
  }

  function counts() {
    $("shown").textContent = "showing " + view.length.toLocaleString("en") + " of " + N.toLocaleString("en") +
      " files \u00b7 " + nTicked.toLocaleString("en") + " ticked";
    var dl = $("download");
    dl.textContent = "download ticked (" + nTicked.toLocaleString("en") + ")";
    dl.classList.toggle("empty", nTicked === 0);
  }

  // --- the rows in view ------------------------------------------------------------------
  var pool = [];
  function makeRow() {
    var el = document.createElement("div");
    el.className = "row";
    el.setAttribute("role", "row");
    for (var j = 0; j < COLS.length; j++) {
      var c = document.createElement("div");
      c.className = COLS[j].id;
      c.setAttribute("role", "cell");
      el.appendChild(c);
    }
    var box = document.createElement("input");
    box.type = "checkbox"; box.className = "tick"; box.setAttribute("aria-label", "accept");
    el.children[0].appendChild(box);
    var play = document.createElement("a");
    play.className = "play"; play.textContent = "\u25b6";
    el.children[1].appendChild(play);
    var bar = document.createElement("i");
    el._conf = document.createElement("span");
    el.children[6].appendChild(el._conf); el.children[6].appendChild(bar); el._bar = bar;
    el._act = document.createElement("span");
    el.children[8].appendChild(el._act);
    body.appendChild(el);
    return el;
  }

  function fill(el, i, pos) {
    var r = R[i], cells = el.children;
    el._i = i;
    el.style.transform = "translateY(" + (pos * ROW_H) + "px)";
    var box = cells[0].firstChild;
    box.disabled = !(r[8] & TICKABLE);
    box.checked = !!ticked[i];
    el.classList.toggle("ticked", !!ticked[i]);
    var play = cells[1].firstChild;
    if (r[10] !== null) {
      play.hidden = false;
      play.setAttribute("href", F[r[0]][2] + r[10] + "#t=" + r[9]);
      play.title = "play from " + fmtTime(r[9]) + (r[8] & DISAGREES ? " (disagrees with the current genre)" : " (unsure)");
    } else {
      play.hidden = true;
      play.removeAttribute("href");
    }
    cells[2].textContent = shown(F[r[0]][0]); cells[2].title = shown(F[r[0]][0]);
    cells[3].textContent = shown(r[1]); cells[3].title = shown(r[1]);
    cells[4].textContent = shown(r[2].join("; ")); cells[4].title = cells[4].textContent;
    cells[5].textContent = shown(r[3].join("; ")); cells[5].title = cells[5].textContent;
    cells[5].classList.toggle("differs", !!(r[8] & DISAGREES));
    el._conf.textContent = r[4] === null ? "" : r[4].toFixed(3);
    el._bar.style.width = r[4] === null ? "0" : Math.round(r[4] * 40) + "px";
    cells[6].classList.toggle("low", r[4] !== null && r[4] < D.threshold);
    var top = r[5].map(function (gp) { return shown(gp[0]) + " " + pct(gp[1]); }).join(", ");
    cells[7].textContent = top; cells[7].title = top;
    var a = A[r[6]];
    el._act.textContent = a;
    el._act.className = "act " + (a === "write" ? "write" : a === "written" ? "written" : a === "error" ? "error" :
      a === "skip: below confidence" ? "below" : a === "skip: has genre" ? "has" : "");
    cells[9].textContent = shown(r[7] || ""); cells[9].title = cells[9].textContent;
    cells[9].className = "error err";
  }

  var pending = false;
  function render() {
    pending = false;
    var top = scroller.scrollTop, h = scroller.clientHeight || 600;
    var first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    var last = Math.min(view.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    var need = last - first;
    while (pool.length < need) pool.push(makeRow());
    for (var k = 0; k < pool.length; k++) {
      var el = pool[k];
      if (k < need) {
        el.style.display = "";
        fill(el, view[first + k], first + k);
      } else {
        el.style.display = "none";
        el._i = -1;
      }
    }
    if (!view.length && !$("none-note")) {
      var p = document.createElement("div");
      p.id = "none-note"; p.className = "empty-note"; p.textContent = "No file matches these filters.";
      body.appendChild(p);
    } else if (view.length && $("none-note")) {
      $("none-note").remove();
    }
  }
  function later() { if (!pending) { pending = true; requestAnimationFrame(render); } }
  scroller.addEventListener("scroll", later, { passive: true });
  window.addEventListener("resize", later);

  // --- ticks and the accepted list -------------------------------------------------------
  function setTick(i, on) {
    if (!(R[i][8] & TICKABLE) || !!ticked[i] === on) return;
    ticked[i] = on ? 1 : 0;
    nTicked += on ? 1 : -1;
  }
  body.addEventListener("change", function (ev) {
    var t = ev.target;
    if (!t.classList.contains("tick")) return;
    var i = t.parentNode.parentNode._i;
    if (i >= 0) { setTick(i, t.checked); counts(); render(); }
  });
  $("tick-shown").addEventListener("click", function () { view.forEach(function (i) { setTick(i, true); }); apply(); });
  $("untick-shown").addEventListener("click", function () { view.forEach(function (i) { setTick(i, false); }); apply(); });

  function acceptedText() {
    var lines = [];
    for (var i = 0; i < N; i++) {
      if (!ticked[i]) continue;
      var r = R[i], o = { path: fullPath(r) };
      if (r[11] !== null) o.path_bytes = r[11];
      o.proposed = r[3];
      if (r[12] !== null) o.fingerprint = r[12];
      lines.push(JSON.stringify(o));
    }
    return lines.length ? lines.join("\n") + "\n" : "";
  }
  var blobUrl = null;
  $("download").addEventListener("click", function (ev) {
    if (!nTicked) { ev.preventDefault(); return; }
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(new Blob([acceptedText()], { type: "application/x-ndjson" }));
    this.href = blobUrl;
  });

  // --- the player ------------------------------------------------------------------------
  var audio = $("audio"), playing = null;
  body.addEventListener("click", function (ev) {
    var a = ev.target.closest ? ev.target.closest("a.play") : null;
    if (!a) return;
    ev.preventDefault();
    var i = a.parentNode.parentNode._i, r = R[i];
    if (playing) playing.classList.remove("playing");
    playing = a; a.classList.add("playing");
    $("player").hidden = false;
    $("now-playing").textContent = shown(r[1]) + "  \u00b7  from " + fmtTime(r[9]);
    audio.src = a.getAttribute("href");
    audio.dataset.start = r[9];
    var p = audio.play();
    if (p && p.catch) p.catch(function () {});
  });
  audio.addEventListener("loadedmetadata", function () {
    var s = parseFloat(audio.dataset.start || "0");
    if (s && Math.abs(audio.currentTime - s) > 0.5) audio.currentTime = s;
  });
  $("player-close").addEventListener("click", function () {
    audio.pause(); audio.removeAttribute("src"); $("player").hidden = true;
    if (playing) playing.classList.remove("playing");
  });

  // --- wiring ----------------------------------------------------------------------------
  var timer = null;
  $("f-text").addEventListener("input", function () {
    clearTimeout(timer);
    var v = this.value.trim().toLowerCase();
    timer = setTimeout(function () { st.text = v; apply(); }, 60);
  });
  $("f-genre").addEventListener("change", function () { st.genre = this.value === "" ? -1 : +this.value; apply(); });
  $("f-action").addEventListener("change", function () { st.action = this.value === "" ? -1 : +this.value; apply(); });
  function num(el, dflt) { var v = parseFloat(el.value); return isNaN(v) ? dflt : Math.min(1, Math.max(0, v)); }
  $("f-min").addEventListener("input", function () { st.min = num(this, 0); apply(); });
  $("f-max").addEventListener("input", function () { st.max = num(this, 1); apply(); });
  $("f-listen").addEventListener("change", function () { st.listen = this.checked; apply(); });
  $("f-ticked").addEventListener("change", function () { st.ticked = this.checked; apply(); });
  function setPair(p) {
    st.pair = p;
    $("f-pair").hidden = !p;
    $("f-pair-text").textContent = p ? shown(p[0]) + " \u2192 " + shown(p[1]) : "";
    apply();
  }
  $("f-pair-clear").addEventListener("click", function () { setPair(null); });
  Array.prototype.forEach.call(document.querySelectorAll("table.matrix td[data-r]"), function (td) {
    td.addEventListener("click", function () {
      setPair([D.matrix.rows[+td.getAttribute("data-r")], D.matrix.cols[+td.getAttribute("data-c")]]);
      $("files").scrollIntoView({ behavior: "smooth" });
    });
  });
  $("f-reset").addEventListener("click", function () {
    $("f-text").value = ""; $("f-genre").value = ""; $("f-action").value = ""; $("f-min").value = "0";
    $("f-max").value = "1"; $("f-listen").checked = false; $("f-ticked").checked = false;
    st.text = ""; st.genre = -1; st.action = -1; st.min = 0; st.max = 1; st.listen = false; st.ticked = false;
    st.sort = null; st.desc = false;
    setPair(null);
  });

  // for scripts and tests: what is shown, and the list a download would hold
  window.genretagReview = {
    shown: function () { return view.length; },
    total: N,
    tick: function (i, on) { setTick(i, on !== false); apply(); },
    acceptedText: acceptedText,
    readyAt: performance.now()
  };
  apply();
  document.body.setAttribute("data-ready", "1");
})();
