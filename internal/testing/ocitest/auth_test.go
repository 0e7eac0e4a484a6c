package ocitest

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestAuthRegistry(t *testing.T) {
	reg := StartRegistryWithAuth(t, "alice", "s3cret")
	img := Image(t, ImageConfig{}, Layer(t, File("hello", 0o644, "hi\n")))
	ref := reg.Ref("private/app:1")
	Push(t, ref, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))

	t.Run("challenge", func(t *testing.T) {
		resp, err := http.Get("http://" + reg.Host() + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous GET /v2/: status %d, want 401", resp.StatusCode)
		}
		if got, want := resp.Header.Get("WWW-Authenticate"), `Basic realm="test"`; got != want {
			t.Errorf("WWW-Authenticate %q, want %q", got, want)
		}
	})

	configDir := t.TempDir()
	WriteDockerConfig(t, configDir, reg.Host(), "alice", "s3cret")
	tests := []struct {
		name       string
		opt        remote.Option
		wantStatus int // 0: the pull succeeds
	}{
		{"anonymous", remote.WithAuth(authn.Anonymous), http.StatusUnauthorized},
		{"wrong password", remote.WithAuth(&authn.Basic{Username: "alice", Password: "nope"}), http.StatusUnauthorized},
		{"basic auth", remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}), 0},
		{"docker config", remote.WithAuthFromKeychain(authn.DefaultKeychain), 0},
	}
	// Not parallel: DefaultKeychain reads DOCKER_CONFIG from the environment.
	t.Setenv("DOCKER_CONFIG", configDir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pull(t, ref, tt.opt)
			if tt.wantStatus != 0 {
				var terr *transport.Error
				if !errors.As(err, &terr) || terr.StatusCode != tt.wantStatus {
					t.Fatalf("pull error = %v, want HTTP %d", err, tt.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if g, w := digest(t, got), digest(t, img); g != w {
				t.Errorf("pulled %s, pushed %s", g, w)
			}
		})
	}
}
