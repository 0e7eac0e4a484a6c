package imagemgr

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
)

func TestConfigFromOCI(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want ImageConfig
		err  string // "" for success
	}{{
		name: "full",
		raw: `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
			"history":[{"created_by":"x"}],
			"config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
			"Env":["PATH=/usr/bin:/bin","EMPTY="],"WorkingDir":"/srv","User":"101:101",
			"ExposedPorts":{"80/tcp":{},"443/tcp":{}},"Labels":{"maintainer":"x"},"StopSignal":"SIGQUIT"}}`,
		want: ImageConfig{
			Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"nginx", "-g", "daemon off;"},
			Env: []string{"PATH=/usr/bin:/bin", "EMPTY="}, WorkingDir: "/srv", User: "101:101",
			ExposedPorts: []string{"443/tcp", "80/tcp"}, Labels: map[string]string{"maintainer": "x"},
		},
	}, {
		name: "no config",
		raw:  `{"architecture":"amd64","os":"linux"}`,
	}, {
		name: "nulls",
		raw:  `{"config":{"Entrypoint":null,"Cmd":null,"Env":null}}`,
	}, {
		name: "cmd as a string", raw: `{"config":{"Cmd":"sh -c x"}}`, err: "cannot unmarshal",
	}, {
		name: "env of numbers", raw: `{"config":{"Env":[1]}}`, err: "cannot unmarshal",
	}, {
		name: "port value not an object", raw: `{"config":{"ExposedPorts":{"80/tcp":1}}}`, err: "cannot unmarshal",
	}, {
		name: "env without =", raw: `{"config":{"Env":["PATH"]}}`, err: "not KEY=VALUE",
	}, {
		name: "NUL in cmd", raw: `{"config":{"Cmd":["a\u0000b"]}}`, err: "NUL",
	}, {
		name: "not an object", raw: `[1,2]`, err: "not a JSON object",
	}, {
		name: "null", raw: `null`, err: "not a JSON object",
	}, {
		name: "trailing data", raw: `{"config":{}} {}`, err: "data after",
	}, {
		name: "garbage", raw: `{"config":`, err: "parse image config",
	}, {
		name: "too big", raw: `{"config":{"Labels":{"a":"` + strings.Repeat("x", MaxConfigSize) + `"}}}`, err: "the limit is",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromOCI([]byte(tt.raw))
			if tt.err != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want ErrInvalidArgument saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}
