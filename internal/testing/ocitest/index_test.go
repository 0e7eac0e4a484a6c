package ocitest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPushIndex(t *testing.T) {
	amd := Image(t, ImageConfig{}, Layer(t, File("arch", 0o644, "amd64\n")))
	arm := Image(t, ImageConfig{Platform: "linux/arm64/v8"}, Layer(t, File("arch", 0o644, "arm64\n")))
	reg := StartRegistry(t)
	ref := reg.Ref("banger/multi:latest")
	idx := PushIndex(t, ref, map[string]v1.Image{"linux/amd64": amd, "linux/arm64/v8": arm})

	got, err := remote.Index(parseRef(t, ref), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pulling index: %v", err)
	}
	if g, w := digest(t, got), digest(t, idx); g != w {
		t.Errorf("index digest %s, pushed %s", g, w)
	}
	m, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	type listed struct {
		Platform string
		Digest   v1.Hash
	}
	var gotListed []listed
	for _, d := range m.Manifests {
		gotListed = append(gotListed, listed{d.Platform.String(), d.Digest})
	}
	wantListed := []listed{{"linux/amd64", digest(t, amd)}, {"linux/arm64/v8", digest(t, arm)}}
	if diff := cmp.Diff(wantListed, gotListed); diff != "" {
		t.Errorf("index manifests (-want +got):\n%s", diff)
	}

	// A client asking for arm64 gets the arm64 image.
	img, err := pull(t, ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}))
	if err != nil {
		t.Fatalf("pulling arm64: %v", err)
	}
	if g, w := digest(t, img), digest(t, arm); g != w {
		t.Errorf("arm64 pull got %s, want %s", g, w)
	}
}

func TestImagePlatform(t *testing.T) {
	arm := Image(t, ImageConfig{Platform: "linux/arm64"})
	tests := []struct {
		key     string
		wantErr bool
	}{
		{"linux/arm64", false},
		{"linux/amd64", true},
		{"linux/arm64/v8", true},
		{"a/b/c/d", true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := imagePlatform(arm, tt.key)
			if (err != nil) != tt.wantErr {
				t.Errorf("imagePlatform(linux/arm64 image, %q) error = %v, want error %v", tt.key, err, tt.wantErr)
			}
		})
	}
}
