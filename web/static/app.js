// Stormwatch dashboard: progressive enhancement only. Every page works without this file.
// 1. <time data-local> elements also show the viewer's time zone.
// 2. <body data-refresh="N"> reloads every N seconds (not while the user drags or types).
// 3. The scatter (#scatter) zooms to a dragged box by rewriting the URL (server renders).
"use strict";

(function () {
  function localTimes() {
    var fmt;
    try {
      fmt = new Intl.DateTimeFormat(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
      });
    } catch (e) { return; }
    document.querySelectorAll("time[data-local]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var span = document.createElement("span");
      span.className = "local";
      span.textContent = " (" + fmt.format(d) + ")";
      t.after(span);
    });
  }

  var busy = false;
  function autoRefresh() {
    var s = parseInt(document.body.getAttribute("data-refresh") || "", 10);
    if (!(s > 0)) return;
    document.addEventListener("focusin", function (e) {
      if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) busy = true;
    });
    setInterval(function () {
      if (!busy && document.visibilityState === "visible") location.reload();
    }, s * 1000);
  }

  function zoom() {
    var svg = document.getElementById("scatter");
    if (!svg) return;
    var num = function (k) { return parseFloat(svg.getAttribute("data-" + k)); };
    var x0 = num("x0"), x1 = num("x1"), y0 = num("y0"), y1 = num("y1");
    var left = num("left"), top = num("top"), pw = num("pw"), ph = num("ph");
    var log = svg.getAttribute("data-log") === "true";
    var box = svg.querySelector("rect.zoom");
    var start = null;
    function point(e) {
      var p = svg.createSVGPoint();
      p.x = e.clientX; p.y = e.clientY;
      var q = p.matrixTransform(svg.getScreenCTM().inverse());
      return { x: Math.min(Math.max(q.x, left), left + pw), y: Math.min(Math.max(q.y, top), top + ph) };
    }
    function timeAt(x) { return Math.round(x0 + (x - left) / pw * (x1 - x0)); }
    function durAt(y) {
      var f = (top + ph - y) / ph;
      return log ? Math.pow(10, Math.log10(y0) + f * (Math.log10(y1) - Math.log10(y0))) : y0 + f * (y1 - y0);
    }
    svg.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      busy = true;
      start = point(e);
      e.preventDefault();
    });
    svg.addEventListener("mousemove", function (e) {
      if (!start) return;
      var p = point(e);
      box.setAttribute("x", Math.min(start.x, p.x));
      box.setAttribute("y", Math.min(start.y, p.y));
      box.setAttribute("width", Math.abs(p.x - start.x));
      box.setAttribute("height", Math.abs(p.y - start.y));
    });
    window.addEventListener("mouseup", function (e) {
      if (!start) return;
      var p = point(e), s = start;
      start = null;
      if (Math.abs(p.x - s.x) < 4 || Math.abs(p.y - s.y) < 4) {
        box.setAttribute("width", 0); box.setAttribute("height", 0); busy = false;
        return;
      }
      var u = new URL(location.href);
      u.searchParams.delete("range");
      u.searchParams.set("from", String(timeAt(Math.min(s.x, p.x))));
      u.searchParams.set("to", String(timeAt(Math.max(s.x, p.x))));
      u.searchParams.set("min_ms", durAt(Math.max(s.y, p.y)).toPrecision(4));
      u.searchParams.set("max_ms", durAt(Math.min(s.y, p.y)).toPrecision(4));
      location.href = u.toString();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    autoRefresh();
    zoom();
  });
})();
