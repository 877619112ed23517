
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("outcrop-data").textContent);
  var map = L.map("map", {crs: L.CRS.Simple, minZoom: -20, maxZoom: 6, zoomSnap: 0.25});
  function images(list, opacity, cls) {
    return L.layerGroup(list.map(function (o) {
      return L.imageOverlay(o.image, o.bounds, {opacity: opacity, className: cls || "", alt: o.scene});
    }));
  }
  function fmt(v, n) { return Number(v).toFixed(n); }
  var quicklooks = images(D.quicklooks, 1.0);
  var clusters = images(D.clusters, 0.75, "outcrop-pixelated");
  var similarity = images(D.similarity, 0.8, "outcrop-pixelated");
  var units = images(D.units || [], 0.7, "outcrop-pixelated outcrop-units");
  var unitNames = Object.keys(D.unit_legend || {});
  // Every value in D may come from a user's file: it reaches the page only as text (textContent,
  // text nodes, style properties), never as markup, so a name like <img onerror=...> stays a name.
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function add(parent, children) {
    children.forEach(function (c) {
      parent.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return parent;
  }
  var deposits = L.layerGroup(D.deposits.map(function (d) {
    var popup = add(el("div", null, "outcrop-deposit-popup"), [
      el("b", "Known deposit"), el("br"), el("span", d.name, "outcrop-name"), el("br"),
      "lon " + fmt(d.lon, 4) + ", lat " + fmt(d.lat, 4)]);
    // Clicks on markers stay theirs (bubblingMouseEvents: false): the map's own click shows pixel values.
    var parts = d.rings.map(function (r) {
      return L.polygon(r, {color: "#e31a1c", weight: 2, fill: false, bubblingMouseEvents: false});
    });
    parts.push(L.circleMarker([d.y, d.x], {radius: 6, color: "#000", weight: 1, fillColor: "#e31a1c",
                                           fillOpacity: 1, className: "outcrop-deposit",
                                           bubblingMouseEvents: false}));
    return L.featureGroup(parts).bindPopup(popup);
  }));
  // One marker and footprint per analogue; outcrop serve draws its search results with it too.
  function analogueLayer(list, title) {
    return L.layerGroup(list.map(function (a) {
      var rows = [["rank", a.rank], ["score", fmt(a.score, 3)], ["scene", a.scene], ["tile", a.tile_id],
                  ["matched deposit", a.nearest_positive], ["distance", fmt(a.distance_km, 2) + " km"],
                  ["lon, lat", fmt(a.lon, 4) + ", " + fmt(a.lat, 4)]];
      var table = el("table", null, "outcrop-popup");
      rows.forEach(function (r) { table.appendChild(add(el("tr"), [el("td", r[0]), el("td", r[1])])); });
      var popup = add(el("div"), [el("b", (title || "Analogue") + " #" + a.rank), table]);
      return L.featureGroup([
        L.polygon(a.ring, {color: "#ffffff", weight: 1, fill: false, interactive: false}),
        L.circleMarker([a.y, a.x], {radius: 7, color: "#ffffff", weight: 2, fillColor: "#ff7f00",
                                    fillOpacity: 0.9, className: "outcrop-analogue outcrop-analogue-" + a.rank,
                                    bubblingMouseEvents: false})
      ]).bindPopup(popup);
    }));
  }
  var analogues = analogueLayer(D.analogues);
  // Lat/lon without a projection library: the unit vectors (cos lat cos lon, cos lat sin lon, sin lat)
  // at a grid of nodes over the extent, interpolated bilinearly and renormalised (smooth across the
  // antimeridian and at a pole). outcrop.figures.map_geometry.interpolate_lonlat is the same in Python.
  var R = D.readout;
  function lonLat(x, y) {
    var n = R.nodes, b = R.box, v = R.vectors;
    var fx = (x - b[0]) / (b[2] - b[0]) * (n - 1), fy = (y - b[1]) / (b[3] - b[1]) * (n - 1);
    var j = Math.min(Math.max(Math.floor(fx), 0), n - 2), i = Math.min(Math.max(Math.floor(fy), 0), n - 2);
    var tx = fx - j, ty = fy - i, out = [0, 0, 0];
    [[i, j, (1 - ty) * (1 - tx)], [i, j + 1, (1 - ty) * tx], [i + 1, j, ty * (1 - tx)], [i + 1, j + 1, ty * tx]]
      .forEach(function (c) {
        var k = 3 * (c[0] * n + c[1]);
        out[0] += c[2] * v[k]; out[1] += c[2] * v[k + 1]; out[2] += c[2] * v[k + 2];
      });
    return {lon: Math.atan2(out[1], out[0]) * 180 / Math.PI,
            lat: Math.atan2(out[2], Math.hypot(out[0], out[1])) * 180 / Math.PI};
  }
  function lonLatText(x, y) {
    var p = lonLat(x, y);
    return "lat " + fmt(p.lat, 4) + ", lon " + fmt(p.lon, 4);
  }
  var graticule = L.layerGroup(D.graticule.lines.map(function (g) {
    var line = L.polyline(g.points, {color: "#333", weight: 1, opacity: 0.6, dashArray: "4 4",
                                     interactive: false, className: "outcrop-graticule"});
    // The label sits at the line's west end (parallels) or south end (meridians) in the view.
    var at = g.points.reduce(function (best, p) {
      return (g.kind === "lat" ? p[1] < best[1] : p[0] < best[0]) ? p : best;
    }, g.points[0]);
    var label = L.marker(at, {interactive: false, keyboard: false, icon: L.divIcon({
      className: "outcrop-graticule-label", html: el("span", g.label), iconSize: null})});
    return L.featureGroup([line, label]);
  }));
  var coastline = L.polyline(D.coastline, {color: "#08306b", weight: 1.5, opacity: 0.9, interactive: false,
                                           className: "outcrop-coastline"});
  [quicklooks, clusters, coastline, graticule, deposits, analogues].forEach(function (l) { l.addTo(map); });
  // Leaflet writes layer names and attributions as markup: they are escaped first (the cluster
  // level in a layer name is read from a raster's tags).
  function escaped(text) { return el("span", text).innerHTML; }
  var overlays = {};
  overlays[escaped(D.layers.quicklooks)] = quicklooks;
  overlays[escaped(D.layers.clusters)] = clusters;
  overlays[escaped(D.layers.similarity)] = similarity;
  if ((D.units || []).length) { overlays[escaped(D.layers.units)] = units; }
  overlays[escaped(D.layers.deposits)] = deposits;
  overlays[escaped(D.layers.analogues)] = analogues;
  overlays[escaped(D.layers.coastline)] = coastline;
  overlays[escaped(D.layers.graticule)] = graticule;
  var layerControl = L.control.layers(null, overlays, {collapsed: false, position: "topright"}).addTo(map);
  L.control.scale({imperial: false, metric: true}).addTo(map);
  map.attributionControl.setPrefix("Leaflet");
  map.attributionControl.addAttribution(escaped("projected coordinates: " + D.crs));

  var legend = L.control({position: "bottomright"});
  legend.onAdd = function () {
    var div = L.DomUtil.create("div", "outcrop-legend");
    function swatch(colour, round) {
      var s = el("span", null, "outcrop-swatch");
      s.style.background = String(colour);
      if (round) { s.style.borderRadius = "6px"; }
      return s;
    }
    div.appendChild(el("h4", D.layers.clusters));
    Object.keys(D.cluster_legend).forEach(function (k) {
      add(div, [swatch(D.cluster_legend[k]), k + " "]);
    });
    if (unitNames.length) {
      div.appendChild(el("h4", D.layers.units));
      unitNames.forEach(function (name) { add(div, [swatch(D.unit_legend[name]), name, el("br")]); });
    }
    div.appendChild(el("h4", D.layers.similarity));
    var bar = el("div", null, "outcrop-bar");
    bar.style.background = "linear-gradient(to right," + D.similarity_stops.map(String).join(",") + ")";
    var hi = el("span", fmt(D.similarity_range[1], 2));
    hi.style.cssFloat = "right";
    add(div, [bar, fmt(D.similarity_range[0], 2) + " ", hi]);
    add(div, [el("h4", "Points"), swatch("#e31a1c", true), "known deposit", el("br"),
              swatch("#ff7f00", true), "analogue (click for details)"]);
    return div;
  };
  legend.addTo(map);
  var title = L.control({position: "topleft"});
  title.onAdd = function () {
    var div = L.DomUtil.create("div", "outcrop-title");
    div.textContent = D.title;
    return div;
  };
  title.addTo(map);

  var readout = L.control({position: "bottomleft"});
  readout.onAdd = function () {
    var div = L.DomUtil.create("div", "outcrop-readout");
    div.textContent = "lat, lon: move the cursor over the map";
    map.on("mousemove", function (e) { div.textContent = lonLatText(e.latlng.lng, e.latlng.lat); });
    return div;
  };
  readout.addTo(map);

  // Clicking a pixel shows the cluster and similarity under it, scene by scene. The grids come as
  // base64: labels as uint16 little-endian (nodata 65535), similarity as one byte over its range.
  function decoded(values) {
    if (!values.bytes) {
      var text = atob(values.data), bytes = new Uint8Array(text.length);
      for (var k = 0; k < text.length; k++) { bytes[k] = text.charCodeAt(k); }
      values.bytes = bytes;
    }
    return values.bytes;
  }
  function cell(o, x, y) {
    var b = o.bounds, w = o.values.width, h = o.values.height;
    var col = Math.floor((x - b[0][1]) / (b[1][1] - b[0][1]) * w);
    var row = Math.floor((b[1][0] - y) / (b[1][0] - b[0][0]) * h);
    return (col < 0 || row < 0 || col >= w || row >= h) ? -1 : row * w + col;
  }
  function clusterAt(o, x, y) {
    var k = cell(o, x, y);
    if (k < 0) { return null; }
    var bytes = decoded(o.values), label = bytes[2 * k] | (bytes[2 * k + 1] << 8);
    return label === o.values.nodata ? null : label;
  }
  function similarityAt(o, x, y) {
    var k = cell(o, x, y);
    if (k < 0) { return null; }
    var q = decoded(o.values)[k], v = o.values;
    return q === v.nodata ? null : v.lo + q / 254 * (v.hi - v.lo);
  }
  // What lies under a point, scene by scene: an element for a popup or a panel, or null.
  function valuesAt(x, y) {
    var found = {}, order = [];
    function note(scene, key, value) {
      if (value === null) { return; }
      if (!found[scene]) { found[scene] = {}; order.push(scene); }
      found[scene][key] = value;
    }
    D.clusters.forEach(function (o) { note(o.scene, "cluster", clusterAt(o, x, y)); });
    D.similarity.forEach(function (o) { note(o.scene, "similarity", similarityAt(o, x, y)); });
    (D.units || []).forEach(function (o) {
      var u = clusterAt(o, x, y);
      note(o.scene, "unit", u === null ? null : unitNames[u]);
    });
    if (order.length === 0) { return null; }
    var div = el("div", null, "outcrop-value-popup");
    order.forEach(function (scene) {
      var f = found[scene], parts = [];
      if (f.cluster !== undefined) { parts.push("cluster " + f.cluster + (D.level ? " (" + D.level + ")" : "")); }
      if (f.similarity !== undefined) { parts.push("similarity " + fmt(f.similarity, 2)); }
      if (f.unit !== undefined) { parts.push("unit " + f.unit); }
      parts.push(lonLatText(x, y));
      add(div, [el("b", scene), el("br"), el("span", parts.join(" \u00b7 "), "outcrop-value"), el("br")]);
    });
    return div;
  }
  // On the offline page a click shows the values; outcrop serve's script takes clicks for searches.
  if (!D.live) {
    map.on("click", function (e) {
      var div = valuesAt(e.latlng.lng, e.latlng.lat);
      if (div) { L.popup().setLatLng(e.latlng).setContent(div).openOn(map); }
    });
  }

  var all = D.quicklooks.map(function (o) { return o.bounds; });
  var bounds = L.latLngBounds(all[0]);
  all.forEach(function (b) { bounds.extend(b); });
  map.fitBounds(bounds, {padding: [10, 10]});
  window.outcropMap = map;
  window.outcrop = {map: map, data: D, el: el, add: add, fmt: fmt, lonLat: lonLat, valuesAt: valuesAt,
                    analogueLayer: analogueLayer, layerControl: layerControl, escaped: escaped,
                    layers: {quicklooks: quicklooks, clusters: clusters, similarity: similarity, deposits: deposits,
                             analogues: analogues, coastline: coastline, graticule: graticule}};
})();
