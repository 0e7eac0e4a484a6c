package daemon

// Unit tests of the layer cache: no registry, openers that hand out
// in-memory content, a state root in a temp dir. They need no root.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/errdefs"
	"banger/internal/layout"
)

func TestValidDigest(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for _, tt := range []struct {
		digest string
		ok     bool
	}{
		{"sha256:" + hex64, true},
		{"sha256:" + strings.Repeat("f", 64), true},
		{"sha512:" + hex64 + hex64, false}, // only sha256
		{"md5:" + hex64[:32], false},
		{"SHA256:" + hex64, false},
		{"sha256:" + hex64[:63], false}, // short
		{"sha256:" + hex64 + "0", false},
		{"sha256:" + strings.ToUpper(hex64), false}, // uppercase hex
		{"sha256:" + hex64[:61] + "../", false},     // path characters
		{"sha256:../../../../etc/passwd", false},
		{"sha256:" + hex64[:32] + "/" + hex64[:31], false},
		{"sha256:" + hex64[:63] + "\x00", false},
		{"sha256:" + hex64[:63] + "g", false},
		{hex64, false}, // no algorithm
		{"sha256" + hex64, false},
		{"", false},
		{"sha256:", false},
		{":" + hex64, false},
	} {
		err := validDigest(tt.digest)
		if tt.ok != (err == nil) {
			t.Errorf("validDigest(%q) = %v, want ok=%v", tt.digest, err, tt.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("validDigest(%q) = %v, want an invalid argument", tt.digest, err)
		}
	}
}

// pullNewCache is a layer cache on a fresh state root.
func pullNewCache(t *testing.T) *layerCache {
	t.Helper()
	l := layout.New(t.TempDir())
	for _, d := range l.Dirs() {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return newLayerCache(l)
}

func pullSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pullOpener hands out content, counting the calls.
type pullOpener struct {
	content []byte
	err     error
	calls   atomic.Int32
}

func (o *pullOpener) open(context.Context) (io.ReadCloser, error) {
	o.calls.Add(1)
	if o.err != nil {
		return nil, o.err
	}
	return io.NopCloser(bytes.NewReader(o.content)), nil
}

// pullAssertNotCached checks that neither the blob nor a temporary file of
// it is left.
func pullAssertNotCached(t *testing.T, c *layerCache, digest string) {
	t.Helper()
	if _, err := os.Lstat(c.Path(digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is cached after a failed download (Lstat: %v)", digest, err)
	}
	if names := pullDirNames(t, c.layout.StagingDir()); len(names) != 0 {
		t.Errorf("staging holds %v after the download", names)
	}
}

func TestLayerCacheEnsure(t *testing.T) {
	content := bytes.Repeat([]byte("layer bytes "), 100_000) // 1.2 MB, several reads
	digest := pullSHA256(content)
	size := int64(len(content))

	t.Run("downloads once, then answers from the cache", func(t *testing.T) {
		c := pullNewCache(t)
		o := &pullOpener{content: content}
		var last int64
		cached, err := c.Ensure(context.Background(), digest, size, o.open, func(n int64) { last = n })
		if err != nil || cached {
			t.Fatalf("first Ensure = cached %v, %v; want downloaded", cached, err)
		}
		if last != size {
			t.Errorf("progress ended at %d, want %d", last, size)
		}
		fi, err := os.Lstat(c.Path(digest))
		if err != nil || fi.Mode() != 0o444 || fi.Size() != size {
			t.Fatalf("cached blob: %v, %v; want -r--r--r-- of %d bytes", fi, err, size)
		}
		if want := filepath.Join(c.layout.Root, "layers", "sha256", strings.TrimPrefix(digest, "sha256:")); c.Path(digest) != want {
			t.Errorf("blob path %s, want %s", c.Path(digest), want)
		}
		got, err := os.ReadFile(c.Path(digest))
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("cached blob differs from the content (%v)", err)
		}
		cached, err = c.Ensure(context.Background(), digest, size, o.open, func(int64) {})
		if err != nil || !cached || o.calls.Load() != 1 {
			t.Errorf("second Ensure = cached %v, %v after %d opens; want cached without opening", cached, err, o.calls.Load())
		}
	})

	for _, tt := range []struct {
		name      string
		size      int64
		opener    *pullOpener
		errSubstr string
	}{
		{"content with another digest", size, &pullOpener{content: append([]byte("X"), content[1:]...)}, "content has digest"},
		{"more bytes than declared", size - 1, &pullOpener{content: content}, "more than the"},
		{"fewer bytes than declared", size + 1, &pullOpener{content: content}, "the manifest declares"},
		{"nothing at all", size, &pullOpener{content: nil}, "got 0 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := pullNewCache(t)
			cached, err := c.Ensure(context.Background(), digest, tt.size, tt.opener.open, func(int64) {})
			if err == nil || cached || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), digest) || !strings.Contains(err.Error(), tt.errSubstr) {
				t.Errorf("Ensure = cached %v, %v; want an invalid argument naming %s and saying %q", cached, err, digest, tt.errSubstr)
			}
			pullAssertNotCached(t, c, digest)
		})
	}

	t.Run("opener fails", func(t *testing.T) {
		c := pullNewCache(t)
		boom := errors.New("connection reset (fake)")
		_, err := c.Ensure(context.Background(), digest, size, (&pullOpener{err: boom}).open, func(int64) {})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), digest) {
			t.Errorf("Ensure = %v, want the opener's error, naming the layer", err)
		}
		pullAssertNotCached(t, c, digest)
	})

	t.Run("bad digest or size refused before opening", func(t *testing.T) {
		c := pullNewCache(t)
		o := &pullOpener{content: content}
		for _, tt := range []struct {
			digest string
			size   int64
		}{{"sha256:../../x", size}, {"sha512:" + strings.Repeat("0", 128), size}, {digest, -1}} {
			if _, err := c.Ensure(context.Background(), tt.digest, tt.size, o.open, func(int64) {}); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Ensure(%q, %d) = %v, want invalid argument", tt.digest, tt.size, err)
			}
		}
		if o.calls.Load() != 0 {
			t.Errorf("the opener was called %d times", o.calls.Load())
		}
		if names := pullDirNames(t, c.layout.LayersDir()); len(names) != 0 {
			t.Errorf("layers/ holds %v", names)
		}
	})
}

func TestLayerCacheConcurrentEnsureOpensOnce(t *testing.T) {
	c := pullNewCache(t)
	content := bytes.Repeat([]byte("shared "), 50_000)
	digest := pullSHA256(content)
	release := make(chan struct{})
	var opens atomic.Int32
	open := func(context.Context) (io.ReadCloser, error) {
		opens.Add(1)
		<-release // hold the download until every caller has arrived
		return io.NopCloser(bytes.NewReader(content)), nil
	}
	const callers = 8
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Ensure(context.Background(), digest, int64(len(content)), open, func(int64) {})
			errs <- err
		}()
	}
	// Let every caller reach Ensure; one that comes late finds the blob
	// cached, which is just as good.
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Ensure: %v", err)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("%d concurrent Ensure calls opened the blob %d times, want once", callers, n)
	}
	if got, err := os.ReadFile(c.Path(digest)); err != nil || !bytes.Equal(got, content) {
		t.Errorf("cached blob wrong (%v)", err)
	}
}

// pullStallingReader gives some bytes, then blocks until ctx ends and
// fails with its error, as a cancelled HTTP body read does.
type pullStallingReader struct {
	ctx  context.Context
	head []byte
}

func (r *pullStallingReader) Read(p []byte) (int, error) {
	if len(r.head) > 0 {
		n := copy(p, r.head)
		r.head = r.head[n:]
		return n, nil
	}
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

func (r *pullStallingReader) Close() error { return nil }

// TestLayerCacheWaiterRetriesWhenTheDownloadIsCancelled: a pull waiting
// for another pull's download of a layer downloads it itself when that
// pull goes away.
func TestLayerCacheWaiterRetriesWhenTheDownloadIsCancelled(t *testing.T) {
	c := pullNewCache(t)
	content := bytes.Repeat([]byte("retry "), 100_000)
	digest, size := pullSHA256(content), int64(len(content))

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	first := make(chan error, 1)
	go func() {
		_, err := c.Ensure(ctx1, digest, size, func(ctx context.Context) (io.ReadCloser, error) {
			return &pullStallingReader{ctx: ctx, head: content[:1000]}, nil
		}, func(int64) {})
		first <- err
	}()
	pullWaitInflight(t, c, digest)

	waiting, progress := pullWaiting()
	o := &pullOpener{content: content}
	second := make(chan error, 1)
	var secondCached bool
	go func() {
		var err error
		secondCached, err = c.Ensure(context.Background(), digest, size, o.open, progress)
		second <- err
	}()
	<-waiting
	if o.calls.Load() != 0 {
		t.Fatal("the second Ensure opened the blob while the first was downloading it")
	}
	cancel1()

	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled download = %v, want context.Canceled", err)
	}
	if err := <-second; err != nil || secondCached {
		t.Fatalf("waiting Ensure = cached %v, %v; want it to download the blob itself", secondCached, err)
	}
	if o.calls.Load() != 1 {
		t.Errorf("the waiter opened the blob %d times, want once", o.calls.Load())
	}
	if got, err := os.ReadFile(c.Path(digest)); err != nil || !bytes.Equal(got, content) {
		t.Errorf("cached blob wrong (%v)", err)
	}
	if names := pullDirNames(t, c.layout.StagingDir()); len(names) != 0 {
		t.Errorf("staging holds %v", names)
	}
}

// A download that fails for a reason other than a cancel fails its
// waiters too; a waiter that goes away leaves the download alone.
func TestLayerCacheWaiters(t *testing.T) {
	content := bytes.Repeat([]byte("w"), 10_000)
	digest, size := pullSHA256(content), int64(len(content))

	t.Run("share the download's failure", func(t *testing.T) {
		c := pullNewCache(t)
		release := make(chan struct{})
		first := make(chan error, 1)
		go func() {
			_, err := c.Ensure(context.Background(), digest, size, func(context.Context) (io.ReadCloser, error) {
				<-release
				return io.NopCloser(strings.NewReader("not the layer")), nil
			}, func(int64) {})
			first <- err
		}()
		pullWaitInflight(t, c, digest)
		o := &pullOpener{content: content}
		waiting, progress := pullWaiting()
		second := make(chan error, 1)
		go func() {
			_, err := c.Ensure(context.Background(), digest, size, o.open, progress)
			second <- err
		}()
		<-waiting
		close(release)
		err1, err2 := <-first, <-second
		if !errdefs.IsInvalidArgument(err1) {
			t.Errorf("download of wrong content = %v, want invalid argument", err1)
		}
		if err2 != err1 || o.calls.Load() != 0 {
			t.Errorf("waiter = %v after %d opens of its own; want the download's error, without a second download", err2, o.calls.Load())
		}
		pullAssertNotCached(t, c, digest)
	})

	t.Run("a waiter that goes away", func(t *testing.T) {
		c := pullNewCache(t)
		release := make(chan struct{})
		first := make(chan error, 1)
		go func() {
			_, err := c.Ensure(context.Background(), digest, size, func(context.Context) (io.ReadCloser, error) {
				<-release
				return io.NopCloser(bytes.NewReader(content)), nil
			}, func(int64) {})
			first <- err
		}()
		pullWaitInflight(t, c, digest)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Ensure(ctx, digest, size, (&pullOpener{content: content}).open, func(int64) {}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("waiter whose context ended = %v, want its context's error", err)
		}
		close(release)
		if err := <-first; err != nil {
			t.Errorf("the download failed after its waiter left: %v", err)
		}
		if _, err := os.Stat(c.Path(digest)); err != nil {
			t.Error(err)
		}
	})
}

// pullWaitInflight waits until a download of digest is registered.
func pullWaitInflight(t *testing.T, c *layerCache, digest string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c.mu.Lock()
		_, ok := c.inflight[digest]
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no download of the layer started")
		}
		time.Sleep(time.Millisecond)
	}
}

// pullWaiting returns a progress callback for a second Ensure of a blob
// being downloaded, and a channel closed at its first call: a waiter
// reports the download's progress every progressInterval.
func pullWaiting() (<-chan struct{}, func(int64)) {
	ch := make(chan struct{})
	var once sync.Once
	return ch, func(int64) { once.Do(func() { close(ch) }) }
}
