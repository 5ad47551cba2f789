package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the dashboard: static files compiled into the binary, so
// nothing is built or fetched at run time. They are served without the
// token; the data they show comes from the admin API, which needs it.
//
//go:embed web
var web embed.FS

// registerDashboard serves the dashboard: index.html at / and each other
// file at its name. Routes are exact, so they never shadow the API's.
func registerDashboard(mux *http.ServeMux) {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic("httpapi: dashboard files missing from the binary: " + err.Error())
	}
	h := dashboardHandler(sub)
	mux.Handle("GET /{$}", h)
	entries, err := fs.ReadDir(sub, ".")
	if err != nil {
		panic("httpapi: dashboard files missing from the binary: " + err.Error())
	}
	for _, ent := range entries {
		if !ent.IsDir() && ent.Name() != "index.html" {
			mux.Handle("GET /"+ent.Name(), h)
		}
	}
}

func dashboardHandler(sub fs.FS) http.Handler {
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
