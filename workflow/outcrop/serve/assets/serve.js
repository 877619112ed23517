// outcrop serve: the live map. The map itself (layers, graticule, coastline, readout, legend) is
// map.html's script; this one adds searches, marks and the result list, talking to the server's
// JSON API (docs/serve.md). Every value shown comes from the server and may come from a user's
// file: it reaches the page as text only (window.outcrop.el / add), never as markup.
(function () {
  "use strict";
  var O = window.outcrop, map = O.map, D = O.data, el = O.el, add = O.add, fmt = O.fmt;
  var $ = function (id) { return document.getElementById(id); };
  var mode = "search", drawing = [], resultLayer = L.layerGroup().addTo(map);
  var marksLayer = L.layerGroup().addTo(map), drawLayer = L.layerGroup().addTo(map);
  O.layerControl.addOverlay(resultLayer, O.escaped(D.layers.results));
  O.layerControl.addOverlay(marksLayer, O.escaped(D.layers.marks));
  window.outcropTimings = [];  // click-to-results round trips (ms), read by the benchmark
  window.outcropSearches = 0;  // searches answered and drawn

  function status(text, isError) {
    var s = $("outcrop-status");
    s.textContent = text;
    s.className = isError ? "outcrop-error" : "";
  }
  function api(method, path, body) {
    var init = {method: method, credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); }
        return j;
      });
    });
  }
  function top() {
    var k = parseInt($("outcrop-top").value, 10);
    return isFinite(k) ? Math.min(Math.max(k, 1), D.serve.max_top) : 10;
  }

  // --- marks -------------------------------------------------------------------------------------
  function showMarks(state) {
    $("outcrop-counts").textContent = "right: " + state.positives + " \u00b7 wrong: " + state.negatives;
    $("outcrop-undo").disabled = !state.undo;
    $("outcrop-file").textContent = "saved in " + state.file;
    marksLayer.clearLayers();
    state.marks.forEach(function (m) {
      var right = m.mark === "positive", colour = right ? "#1a9850" : "#d73027";
      var parts = m.rings.map(function (r) {
        return L.polygon(r, {color: colour, weight: 2, fill: false, dashArray: right ? null : "4 3"});
      });
      parts.push(L.circleMarker([m.y, m.x], {radius: 6, color: right ? "#ffffff" : "#000000", weight: 2,
                                             fillColor: colour, fillOpacity: 1, bubblingMouseEvents: false,
                                             className: "outcrop-mark outcrop-mark-" + m.mark}));
      var popup = add(el("div"), [el("b", right ? "Marked right" : "Marked wrong"), el("br"),
                                  el("span", m.name, "outcrop-name"), el("br"),
                                  "lon " + fmt(m.lon, 4) + ", lat " + fmt(m.lat, 4)]);
      marksLayer.addLayer(L.featureGroup(parts).bindPopup(popup));
    });
  }
  function mark(kind, what) {
    what.mark = kind;
    return api("POST", "api/marks", what).then(function (state) {
      showMarks(state);
      status("marked " + (kind === "positive" ? "right" : "wrong") + "; search again to use it");
      return state;
    }).catch(function (e) { status(e.message, true); });
  }

  // --- searches ----------------------------------------------------------------------------------
  function showResults(answer, started) {
    var list = $("outcrop-results");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    resultLayer.clearLayers();
    resultLayer.addLayer(O.analogueLayer(answer.results, "Result"));
    answer.results.forEach(function (a) {
      var right = el("button", "\u2713"), wrong = el("button", "\u2717");
      right.title = "mark right";
      wrong.title = "mark wrong";
      right.className = "outcrop-mark-right";
      wrong.className = "outcrop-mark-wrong";
      right.addEventListener("click", function (ev) { ev.stopPropagation(); mark("positive", {tile: a.id}); });
      wrong.addEventListener("click", function (ev) { ev.stopPropagation(); mark("negative", {tile: a.id}); });
      var li = add(el("li", null, "outcrop-result"), [
        wrong, right, el("span", "#" + a.rank + " ", "outcrop-rank"), el("span", fmt(a.score, 3), "outcrop-score"),
        " ", el("span", a.scene, "outcrop-scene"), el("br"),
        el("small", fmt(a.distance_km, 2) + " km from " + a.nearest_positive + " \u00b7 tile " + a.tile_id)]);
      li.dataset.id = String(a.id);
      li.addEventListener("click", function () { map.setView([a.y, a.x], Math.max(map.getZoom(), -2)); });
      list.appendChild(li);
    });
    ["geojson", "csv", "gpkg"].forEach(function (f) {
      $("outcrop-export-" + f).href = "api/export/" + answer.search + "." + f;
    });
    $("outcrop-export").hidden = answer.results.length === 0;
    status(answer.results.length + " results from " + answer.positives + " right and " + answer.negatives +
           " wrong");
    window.outcropSearches += 1;
    if (started !== undefined) {
      requestAnimationFrame(function () { window.outcropTimings.push(performance.now() - started); });
    }
  }
  function search(what, started) {
    what.top = top();
    status("searching\u2026");
    return api("POST", "api/search", what).then(function (answer) { showResults(answer, started); })
      .catch(function (e) { status(e.message, true); });
  }
  function lonLatOf(latlng) {
    var p = O.lonLat(latlng.lng, latlng.lat);
    return {lon: p.lon, lat: p.lat};
  }

  // --- drawing -----------------------------------------------------------------------------------
  function redraw() {
    drawLayer.clearLayers();
    if (drawing.length > 0) {
      drawLayer.addLayer(L.polyline(drawing, {color: "#7b3294", weight: 2, dashArray: "5 4", interactive: false}));
      drawing.forEach(function (p) { drawLayer.addLayer(L.circleMarker(p, {radius: 3, color: "#7b3294", interactive: false})); });
    }
  }
  function setMode(value) {
    mode = value;
    drawing = [];
    redraw();
    $("outcrop-draw-buttons").hidden = mode !== "draw";
    map.getContainer().classList.toggle("outcrop-drawing", mode === "draw");
  }
  Array.prototype.forEach.call(document.querySelectorAll("input[name=outcrop-mode]"), function (r) {
    r.addEventListener("change", function () { if (r.checked) { setMode(r.value); } });
  });
  $("outcrop-finish").addEventListener("click", function () {
    if (drawing.length < 3) { status("a polygon needs at least 3 corners: click them on the map", true); return; }
    var ring = drawing.map(function (p) { var q = lonLatOf(p); return [q.lon, q.lat]; });
    drawing = [];
    redraw();
    search({polygon: ring}, performance.now());
  });
  $("outcrop-cancel").addEventListener("click", function () { setMode("draw"); });

  map.on("click", function (e) {
    var started = performance.now();
    var values = $("outcrop-values");
    while (values.firstChild) { values.removeChild(values.firstChild); }
    var under = O.valuesAt(e.latlng.lng, e.latlng.lat);
    if (under) { values.appendChild(under); }
    if (mode === "draw") {
      drawing.push(e.latlng);
      redraw();
    } else if (mode === "search") {
      search({place: lonLatOf(e.latlng)}, started);
    } else {
      mark(mode, {place: lonLatOf(e.latlng)});
    }
  });
  $("outcrop-search").addEventListener("click", function () { search({}); });
  $("outcrop-undo").addEventListener("click", function () {
    api("POST", "api/marks/undo", {}).then(showMarks).catch(function (e) { status(e.message, true); });
  });
  $("outcrop-clear").addEventListener("click", function () {
    if (!window.confirm("Remove every mark? (Undo brings them back.)")) { return; }
    api("POST", "api/marks/clear", {}).then(showMarks).catch(function (e) { status(e.message, true); });
  });
  $("outcrop-import").addEventListener("click", function () {
    mark("positive", {deposits: true});
  });
  $("outcrop-import").hidden = D.deposits.length === 0;
  // The run's own analogues stay in the layer control, off at first: the search results are the list.
  map.removeLayer(O.layers.analogues);
  api("GET", "api/marks").then(showMarks).catch(function (e) { status(e.message, true); });
  window.outcropServe = {search: search, mark: mark};
})();
