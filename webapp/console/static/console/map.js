/* The device map: devices drawn by latitude and longitude on a plain SVG graticule (no tile
   server is reachable from the platform's networks). The view fits the devices shown. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var points = JSON.parse(document.getElementById("map-points").textContent);
  var box = document.getElementById("map");

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function niceStep(span) {
    var steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 45];
    for (var i = 0; i < steps.length; i++) { if (span / steps[i] <= 8) { return steps[i]; } }
    return 60;
  }

  function bounds() {
    if (!points.length) { return {west: -180, east: 180, south: -70, north: 80}; }
    var b = {west: 180, east: -180, south: 90, north: -90};
    points.forEach(function (p) {
      b.west = Math.min(b.west, p.lon); b.east = Math.max(b.east, p.lon);
      b.south = Math.min(b.south, p.lat); b.north = Math.max(b.north, p.lat);
    });
    var padLon = Math.max((b.east - b.west) * 0.1, 0.01);
    var padLat = Math.max((b.north - b.south) * 0.1, 0.01);
    return {west: b.west - padLon, east: b.east + padLon,
            south: Math.max(b.south - padLat, -90), north: Math.min(b.north + padLat, 90)};
  }

  function draw() {
    var width = box.clientWidth || 800;
    var height = box.clientHeight || 560;
    var b = bounds();
    // Equirectangular, with longitude squeezed by cos(mid latitude) so shapes stay true.
    var squeeze = Math.cos(((b.north + b.south) / 2) * Math.PI / 180);
    var scale = Math.min(width / ((b.east - b.west) * squeeze), height / (b.north - b.south));
    var offsetX = (width - (b.east - b.west) * squeeze * scale) / 2;
    var offsetY = (height - (b.north - b.south) * scale) / 2;
    function x(lon) { return offsetX + (lon - b.west) * squeeze * scale; }
    function y(lat) { return offsetY + (b.north - lat) * scale; }

    var svg = el("svg", {viewBox: "0 0 " + width + " " + height});
    var step = niceStep(Math.max(b.east - b.west, b.north - b.south));
    var digits = step < 1 ? String(step).split(".")[1].length : 0;
    for (var lon = Math.ceil(b.west / step) * step; lon <= b.east; lon += step) {
      svg.appendChild(el("line", {"class": "grid", x1: x(lon), x2: x(lon), y1: 0, y2: height}));
      svg.appendChild(el("text", {"class": "grid-label", x: x(lon) + 3, y: height - 4},
                         lon.toFixed(digits) + "°"));
    }
    for (var lat = Math.ceil(b.south / step) * step; lat <= b.north; lat += step) {
      svg.appendChild(el("line", {"class": "grid", x1: 0, x2: width, y1: y(lat), y2: y(lat)}));
      svg.appendChild(el("text", {"class": "grid-label", x: 3, y: y(lat) - 3},
                         lat.toFixed(digits) + "°"));
    }
    points.forEach(function (p) {
      var link = el("a", {href: p.url, "data-device": p.id});
      var dot = el("circle", {cx: x(p.lon), cy: y(p.lat), r: 6, "class": p.status});
      dot.appendChild(el("title", {}, (p.name ? p.name + " · " : "") + p.id +
                                     " (" + p.lat + ", " + p.lon + ")"));
      link.appendChild(dot);
      svg.appendChild(link);
    });
    box.textContent = "";
    box.appendChild(svg);
  }

  draw();
  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(draw, 150);
  });
})();
