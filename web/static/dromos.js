// dromos web UI: live updates and log following. Plain script, no framework, no build.
// Pages work without it; with it they follow /v2/events:
// - <main data-events="types|*" data-app="/id"> names the events a page cares about;
//   when one arrives, the page is fetched again and every element marked data-live
//   (with an id) is swapped for its new version. Inputs a user types into or picks
//   from are never inside those (only buttons), so nothing typed is lost.
// - <pre data-follow="url" data-offset="n"> appends a task's new output.
// - #live shows when the stream is lost and being retried.
"use strict";
(function () {
  var main = document.querySelector("main[data-events]");
  var status = document.getElementById("live");

  function show(text) {
    if (!status) return;
    status.hidden = !text;
    status.textContent = text || "";
  }

  // Fetch the page again and swap its live regions (one fetch at a time; events that
  // arrive meanwhile cause one more).
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          // Only what changed is replaced: focus and selection elsewhere stay put.
          var fresh = doc.getElementById(old.id);
          if (fresh && fresh.outerHTML !== old.outerHTML) old.replaceWith(document.importNode(fresh, true));
        });
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function relevant(type, data) {
    var want = main.dataset.events.split(",");
    if (want.indexOf("*") < 0 && want.indexOf(type) < 0) return false;
    var app = main.dataset.app;
    if (!app) return true;
    var id = data && (data.appId || (data.plan && JSON.stringify(data.plan)) || "");
    return typeof id === "string" && id.indexOf(app) >= 0;
  }

  // Subscribes to the event stream; `onEvent(type, data)` gets each event. Reconnects
  // with backoff when the stream ends, showing that it is lost meanwhile.
  function subscribe(url, types, onEvent, onOpen) {
    var delay = 1000;
    function connect() {
      var es = new EventSource(url);
      es.onopen = function () { delay = 1000; show(""); if (onOpen) onOpen(); };
      types.forEach(function (t) {
        es.addEventListener(t, function (e) {
          var data = null;
          try { data = JSON.parse(e.data); } catch (err) { return; }
          onEvent(t, data, e.data);
        });
      });
      es.onerror = function () {
        show("Live updates lost; retrying…");
        if (es.readyState === EventSource.CLOSED) {
          es.close();
          setTimeout(connect, delay);
          delay = Math.min(delay * 2, 30000);
        }
      };
    }
    connect();
  }

  var ALL = ["api_post_event", "status_update_event", "instance_changed_event", "health_status_changed_event",
    "instance_health_changed_event", "failed_health_check_event", "unhealthy_instance_kill_event",
    "deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
    "deployment_step_failure", "app_terminated_event", "load_balancer_rejected_app_event",
    "job_run_started", "job_run_succeeded", "job_run_failed", "job_run_retried", "job_run_missed",
    "job_run_skipped", "event_stream_resync"];

  // Whatever happened between rendering the page and subscribing (or while the
  // stream was down) is caught up by one refresh when the stream opens.
  function connect() {
    var types = main.dataset.events === "*" ? ALL : main.dataset.events.split(",");
    subscribe("/v2/events", types, function (t, data) { if (relevant(t, data)) refresh(); }, refresh);
  }

  // The events page: new events go on top of the list.
  var tail = document.querySelector("[data-tail]");
  if (tail) {
    var only = tail.dataset.tail;
    var url = "/v2/events" + (only ? "?event_type=" + encodeURIComponent(only) : "");
    subscribe(url, only ? [only] : ALL, function (t, data, raw) {
      var li = document.createElement("li");
      var type = document.createElement("span");
      type.className = "event-type";
      type.textContent = t;
      var code = document.createElement("code");
      code.textContent = raw;
      li.append(type, " ", code);
      tail.prepend(li);
      while (tail.children.length > 500) tail.lastElementChild.remove();
    });
  }

  if (main) connect();

  // Follow a task's log: ask for the bytes after the last one shown. Offsets count
  // bytes, so the answer is read as bytes and decoded by one streaming decoder (a
  // character split between two answers comes out whole).
  var log = document.querySelector("pre[data-follow]");
  if (log) {
    var offset = Number(log.dataset.offset) || 0;
    var decoder = new TextDecoder();
    var poll = function () {
      fetch(log.dataset.follow + "&offset=" + offset, { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) return Promise.reject(r.status);
          var start = Number(r.headers.get("X-Dromos-Log-Offset"));
          return r.arrayBuffer().then(function (b) { return { start: start, bytes: b }; });
        })
        .then(function (c) {
          if (c.bytes.byteLength > 0) {
            var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
            log.append(decoder.decode(c.bytes, { stream: true }));
            offset = c.start + c.bytes.byteLength;
            if (atEnd) log.scrollTop = log.scrollHeight;
          }
        })
        .catch(function () {})
        .then(function () { setTimeout(poll, 1000); });
    };
    setTimeout(poll, 1000);
  }
})();
