// incidentd web board: live updates (server-sent events) and countdowns.
// Everything works without it; it only keeps the page current.
(function () {
  "use strict";
  function human(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), sec = s % 60;
    function two(a, ua, b, ub) { return b ? a + ua + " " + b + ub : a + ua; }
    if (d) return two(d, "d", h, "h");
    if (h) return two(h, "h", m, "m");
    if (m) return two(m, "m", sec, "s");
    return sec + "s";
  }
  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-since]").forEach(function (t) {
      t.textContent = human(now - Number(t.dataset.since));
    });
    document.querySelectorAll("[data-until]").forEach(function (t) {
      var left = Number(t.dataset.until) - now;
      t.textContent = left >= 0 ? "in " + human(left) : human(-left) + " overdue";
    });
  }
  var main = document.getElementById("main");
  var skew = 0;
  if (main && main.dataset.now) skew = Number(main.dataset.now) - Date.now();
  tick();
  setInterval(tick, 1000);
  if (!main || !main.hasAttribute("data-live") || !window.EventSource) return;
  var pending = false, busy = false;
  // Never swap the page under someone who is typing or choosing.
  function editing() {
    var a = document.activeElement;
    if (!a || !main.contains(a)) return false;
    if (a.tagName === "SELECT" || a.tagName === "TEXTAREA") return true;
    return a.tagName === "INPUT" && a.type !== "hidden" && a.type !== "submit";
  }
  function refresh() {
    if (busy) { pending = true; return; }
    if (editing()) { setTimeout(refresh, 1000); return; }
    busy = true; pending = false;
    fetch(location.pathname + location.search, {headers: {"X-Incidentd-Partial": "1"}, credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var focused = document.activeElement && document.activeElement.id;
        main.innerHTML = html;
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
        main.dataset.updated = String(Date.now());
        tick();
      })
      .catch(function () {})
      .then(function () { busy = false; if (pending) refresh(); });
  }
  if (main.dataset.every) setInterval(refresh, Number(main.dataset.every) * 1000);
  var es = new EventSource("/ui/events");
  es.addEventListener("changed", refresh);
  es.addEventListener("open", function () { document.body.classList.remove("offline"); });
  es.addEventListener("error", function () { document.body.classList.add("offline"); });
  document.addEventListener("change", function (e) {
    var f = e.target.form;
    if (f && f.classList.contains("filters")) f.submit();
  });
})();
