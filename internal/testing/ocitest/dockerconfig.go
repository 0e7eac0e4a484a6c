package ocitest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// WriteDockerConfig writes dir/config.json in docker's format, holding
// user:pass for host, and returns its path. Point DOCKER_CONFIG at dir to
// have docker-compatible clients read it.
func WriteDockerConfig(t testing.TB, dir, host, user, pass string) string {
	t.Helper()
	type authEntry struct {
		Auth string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]authEntry `json:"auths"`
	}{
		Auths: map[string]authEntry{
			host: {Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
		},
	}
	data, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		t.Fatalf("ocitest: %v", err)
	}
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, append(data, '\n'), 0o600); err != nil {
		t.Fatalf("ocitest: writing docker config: %v", err)
	}
	return p
}
