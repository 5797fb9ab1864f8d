// The dashboard's behaviour: live refresh from the outbox stream, the controls' JSON calls
// with the session's CSRF header, the equity chart. No framework beyond htmx and uPlot.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var toast = document.getElementById("toast");

  function say(text, bad) {
    var item = document.createElement("div");
    item.textContent = text;
    if (bad) item.className = "bad";
    toast.appendChild(item);
    setTimeout(function () { item.remove(); }, bad ? 9000 : 4000);
  }

  // The admin API takes JSON; htmx sends forms unless told otherwise.
  htmx.defineExtension("json-enc", {
    onEvent: function (name, evt) {
      if (name === "htmx:configRequest") evt.detail.headers["Content-Type"] = "application/json";
    },
    encodeParameters: function (xhr, parameters) {
      xhr.overrideMimeType("text/json");
      var body = {};
      parameters.forEach(function (value, key) { body[key] = value; });
      return JSON.stringify(body);
    }
  });

  document.body.addEventListener("htmx:configRequest", function (evt) {
    if (csrf) evt.detail.headers["X-CSRF-Token"] = csrf.content;
  });

  // A control's answer: the JSON's status or detail, as a toast.
  document.body.addEventListener("htmx:afterRequest", function (evt) {
    var source = evt.detail.elt;
    var control = source.closest("[data-control]");
    if (evt.detail.requestConfig.path === "/logout" && evt.detail.successful) {
      window.location.assign("/");
      return;
    }
    if (!control) return;
    var answer = {};
    try { answer = JSON.parse(evt.detail.xhr.responseText); } catch (e) { /* not JSON */ }
    var ok = evt.detail.xhr.status < 300;
    var what = control.getAttribute("data-control");
    say(what + ": " + (answer.detail || answer.status || evt.detail.xhr.status) +
        (answer.reason ? " (" + answer.reason + ")" : ""), !ok);
    if (what === "flatten" && ok) control.reset();
    refreshSoon();
  });
  document.body.addEventListener("htmx:sendError", function () {
    say("the daemon did not answer", true);
  });

  // Flatten asks for the word, typed.
  document.body.addEventListener("input", function (evt) {
    if (evt.target.id === "flatten-confirm") {
      document.getElementById("flatten-button").disabled = evt.target.value !== "FLATTEN";
    }
  });
  document.body.addEventListener("reset", function (evt) {
    var button = evt.target.querySelector && evt.target.querySelector("#flatten-button");
    if (button) button.disabled = true;
  });

  // An expanded signal stays expanded when its list is refreshed.
  var openSignals = [];
  document.body.addEventListener("htmx:beforeSwap", function (evt) {
    if (evt.detail.target.id === "signals") {
      openSignals = Array.prototype.map.call(
        document.querySelectorAll("#signals details[open]"),
        function (d) { return d.getAttribute("data-signal"); });
    }
  });
  document.body.addEventListener("htmx:afterSettle", function (evt) {
    if (evt.detail.target.id !== "signals" && evt.detail.elt.id !== "signals") return;
    openSignals.forEach(function (id) {
      var details = document.querySelector('#signals details[data-signal="' + id + '"]');
      if (details) details.open = true;
    });
  });

  // The equity curve: the ledger's closed equity and the snapshots' blended equity, in IST.
  var chartBox = document.getElementById("chart");
  var chart = null;
  function chartWidth() { return Math.max(240, chartBox.clientWidth); }
  function drawChart() {
    fetch(chartBox.getAttribute("data-src"), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        var series = [data.t, data.closed, data.blended];
        if (chart) { chart.setData(series); return; }
        chart = new uPlot({
          width: chartWidth(), height: 220,
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Asia/Kolkata"); },
          series: [{}, {label: "Closed ₹", stroke: "#1d4ed8", spanGaps: true},
                   {label: "Blended ₹", stroke: "#11774a", spanGaps: true}],
          // A flat book would otherwise be drawn from zero: keep its level readable.
          scales: {x: {time: true, range: function (u, min, max) {
            // One point (a new book) would otherwise stretch the axis over years.
            return min === max ? [min - 3600, max + 3600] : [min, max];
          }}, y: {range: function (u, min, max) {
            if (min === null || max === null) return [0, 1];
            var pad = Math.max((max - min) * 0.1, Math.abs(max) * 0.002, 1);
            return [min - pad, max + pad];
          }}},
          axes: [{}, {size: 80}]
        }, series, chartBox);
      })
      .catch(function () { /* the next event tries again */ });
  }
  window.addEventListener("resize", function () {
    if (chart) chart.setSize({width: chartWidth(), height: 220});
  });
  drawChart();

  // Live: every committed event refreshes the panels, at most a few times a second.
  var pending = null;
  function refreshSoon() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      htmx.trigger(document.body, "pm-refresh");
      drawChart();
    }, 150);
  }
  function listen() {
    var stream = new EventSource("/events");
    stream.onopen = function () { document.body.setAttribute("data-live", "on"); };
    stream.onmessage = refreshSoon;
    stream.onerror = function () { document.body.setAttribute("data-live", "off"); };
  }
  listen();
})();
