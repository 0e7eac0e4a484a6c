// Package ocitest gives tests a real OCI registry on loopback and real
// images built from files the test describes.
//
// The registry is go-containerregistry's pkg/registry handler served over
// plain HTTP on 127.0.0.1 (like a local `docker run registry`), with blobs
// kept in a temporary directory. Layers are written as real tar streams with
// archive/tar into temporary files, so large layers never sit in memory.
package ocitest

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is a running loopback registry. Its methods are safe to call
// from many goroutines.
type Registry struct {
	host string

	// mu guards the fields below it.
	mu        sync.Mutex
	blobGets  map[string]int // guarded by mu; digest → GETs of its blob
	blobDelay time.Duration  // guarded by mu
	blobRate  int64          // guarded by mu; bytes/second, 0 = unlimited
}

// StartRegistry serves an anonymous registry on 127.0.0.1 until the test
// ends.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return start(t, nil)
}

// StartRegistryWithAuth serves a registry that answers every request without
// HTTP basic credentials user:pass with 401 and
// `WWW-Authenticate: Basic realm="test"`.
func StartRegistryWithAuth(t testing.TB, user, pass string) *Registry {
	t.Helper()
	return start(t, &basicAuth{user: user, pass: pass})
}

func start(t testing.TB, auth *basicAuth) *Registry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ocitest: listening on loopback: %v", err)
	}
	r := &Registry{host: ln.Addr().String(), blobGets: map[string]int{}}

	var h http.Handler = registry.New(
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithBlobHandler(newDiskBlobs(t.TempDir())),
	)
	h = r.blobHooks(h)
	if auth != nil {
		h = auth.wrap(h)
	}
	// Cleanup waits for handlers still running (a throttled download, say),
	// so no goroutine of ours outlives the test.
	var inflight sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			h.ServeHTTP(w, req)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close() // cancels the contexts of requests in flight
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ocitest: registry server: %v", err)
		}
		inflight.Wait()
	})
	return r
}

// Host is the registry's "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.host }

// Ref returns a reference to repoAndTag ("repo:tag" or "repo@sha256:…") in
// this registry, e.g. "127.0.0.1:PORT/repo:tag".
func (r *Registry) Ref(repoAndTag string) string { return r.host + "/" + repoAndTag }

// BlobGets reports how many GET requests for the blob digest
// ("sha256:…") reached the registry, across all repositories. HEAD requests
// and requests refused for lack of credentials are not counted.
func (r *Registry) BlobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[digest]
}

// SetBlobDelay makes every later blob GET wait d before its response
// starts, so concurrent pulls overlap. The wait ends early if the client
// goes away.
func (r *Registry) SetBlobDelay(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobDelay = d
}

// SetBlobRate limits the body of every later blob GET to about
// bytesPerSec, so a download can be cancelled half-way. 0 removes the limit.
func (r *Registry) SetBlobRate(bytesPerSec int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobRate = bytesPerSec
}
