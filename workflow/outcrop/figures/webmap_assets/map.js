
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
    var parts = d.rings.map(function (r) { return L.polygon(r, {color: "#e31a1c", weight: 2, fill: false}); });
    parts.push(L.circleMarker([d.y, d.x], {radius: 6, color: "#000", weight: 1, fillColor: "#e31a1c",
                                           fillOpacity: 1, className: "outcrop-deposit"}));
    return L.featureGroup(parts).bindPopup(popup);
  }));
  var analogues = L.layerGroup(D.analogues.map(function (a) {
    var rows = [["rank", a.rank], ["score", fmt(a.score, 3)], ["scene", a.scene], ["tile", a.tile_id],
                ["nearest known deposit", a.nearest_positive], ["distance", fmt(a.distance_km, 2) + " km"],
                ["lon, lat", fmt(a.lon, 4) + ", " + fmt(a.lat, 4)]];
    var table = el("table", null, "outcrop-popup");
    rows.forEach(function (r) { table.appendChild(add(el("tr"), [el("td", r[0]), el("td", r[1])])); });
    var popup = add(el("div"), [el("b", "Analogue #" + a.rank), table]);
    return L.featureGroup([
      L.polygon(a.ring, {color: "#ffffff", weight: 1, fill: false, interactive: false}),
      L.circleMarker([a.y, a.x], {radius: 7, color: "#ffffff", weight: 2, fillColor: "#ff7f00",
                                  fillOpacity: 0.9, className: "outcrop-analogue outcrop-analogue-" + a.rank})
    ]).bindPopup(popup);
  }));
  [quicklooks, clusters, deposits, analogues].forEach(function (l) { l.addTo(map); });
  // Leaflet writes layer names and attributions as markup: they are escaped first (the cluster
  // level in a layer name is read from a raster's tags).
  function escaped(text) { return el("span", text).innerHTML; }
  var overlays = {};
  overlays[escaped(D.layers.quicklooks)] = quicklooks;
  overlays[escaped(D.layers.clusters)] = clusters;
  overlays[escaped(D.layers.similarity)] = similarity;
  overlays[escaped(D.layers.deposits)] = deposits;
  overlays[escaped(D.layers.analogues)] = analogues;
  L.control.layers(null, overlays, {collapsed: false, position: "topright"}).addTo(map);
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

  var all = D.quicklooks.map(function (o) { return o.bounds; });
  var bounds = L.latLngBounds(all[0]);
  all.forEach(function (b) { bounds.extend(b); });
  map.fitBounds(bounds, {padding: [10, 10]});
  window.outcropMap = map;
})();
