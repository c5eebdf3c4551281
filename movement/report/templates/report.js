(function(){
  function setup(){
    var el = document.getElementById('frame-data');
    if (!el) return;
    JSON.parse(el.textContent).forEach(function(d){
      var gd = document.getElementById(d.plot), img = document.getElementById(d.img),
          cap = document.getElementById(d.cap);
      if (!gd || !img || !gd.on) return;
      function show(e){
        if (!e || !e.points || !e.points.length) return;
        var x = e.points[0].x, best = 0, bd = Infinity;
        for (var i = 0; i < d.t.length; i++){
          var dd = Math.abs(d.t[i] - x); if (dd < bd){ bd = dd; best = i; }
        }
        if (img.getAttribute('data-frame') == String(d.frames[best])) return;
        img.src = d.src[best];
        img.setAttribute('data-frame', d.frames[best]);
        if (cap) cap.textContent = 'frame ' + d.frames[best] + ' · ' + d.t[best].toFixed(2) + ' s';
      }
      gd.on('plotly_hover', show);
      gd.on('plotly_click', show);
    });
  }
  // The face map keeps the faces' aspect ratio whatever the width.
  function fitMap(){
    var wrap = document.querySelector('.summary-map[data-ratio]');
    var gd = wrap && wrap.querySelector('.js-plotly-plot');
    if (!gd || !window.Plotly) return;
    var w = gd.getBoundingClientRect().width;
    var h = Math.round(w * parseFloat(wrap.dataset.ratio) + parseFloat(wrap.dataset.extra));
    if (h > 120 && Math.abs(h - gd.getBoundingClientRect().height) > 6){
      gd.parentElement.style.height = h + 'px';  // to_html's wrapper holds the height
      Plotly.relayout(gd, {height: h});
    }
  }
  function start(){ setup(); fitMap(); }
  if (document.readyState === 'complete') start(); else window.addEventListener('load', start);
  var timer = null;
  window.addEventListener('resize', function(){
    clearTimeout(timer); timer = setTimeout(fitMap, 150);
  });
  // Plotly sizes its figures for the screen; fit them to the printed page.
  window.addEventListener('beforeprint', function(){
    document.querySelectorAll('.js-plotly-plot').forEach(function(gd){
      var w = gd.getBoundingClientRect().width;
      if (w > 700) gd.style.zoom = (700 / w).toFixed(3);
    });
  });
  window.addEventListener('afterprint', function(){
    document.querySelectorAll('.js-plotly-plot').forEach(function(gd){ gd.style.zoom = ''; });
  });
})();
