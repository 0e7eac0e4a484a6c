package ocitest

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// blobHooks wraps the registry handler: it counts GETs of
// /v2/<repo>/blobs/<digest> and applies the blob delay and rate.
func (r *Registry) blobHooks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		digest, ok := blobGetDigest(req)
		if !ok {
			next.ServeHTTP(w, req)
			return
		}
		r.mu.Lock()
		r.blobGets[digest]++
		delay, rate := r.blobDelay, r.blobRate
		r.mu.Unlock()

		if sleep(req.Context(), delay) != nil {
			return // the client went away
		}
		if rate > 0 {
			w = &throttledWriter{ResponseWriter: w, ctx: req.Context(), rate: rate}
		}
		next.ServeHTTP(w, req)
	})
}

// blobGetDigest returns the digest of a blob download request.
func blobGetDigest(req *http.Request) (string, bool) {
	if req.Method != http.MethodGet {
		return "", false
	}
	elem := strings.Split(strings.TrimSuffix(req.URL.Path, "/"), "/")
	// "", "v2", repo..., "blobs", digest
	if len(elem) < 5 || elem[1] != "v2" || elem[len(elem)-2] != "blobs" {
		return "", false
	}
	digest := elem[len(elem)-1]
	if !strings.Contains(digest, ":") { // "uploads" and the like
		return "", false
	}
	return digest, true
}

// throttledWriter writes a response body at about rate bytes a second, in
// small flushed chunks so the client sees the bytes arrive slowly.
//
// It embeds only the http.ResponseWriter interface, so io.Copy cannot
// bypass Write through ReadFrom (sendfile).
type throttledWriter struct {
	http.ResponseWriter
	ctx  context.Context
	rate int64
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	chunk := max(w.rate/20, 1) // about 20 writes a second
	n := 0
	for len(p) > 0 {
		c := min(int64(len(p)), chunk)
		m, err := w.ResponseWriter.Write(p[:c])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[c:]
		if err := sleep(w.ctx, time.Duration(c)*time.Second/time.Duration(w.rate)); err != nil {
			return n, err
		}
	}
	return n, nil
}

// sleep waits d or until ctx is done, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
