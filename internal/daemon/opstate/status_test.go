package opstate

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestStatusJSON(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		st   Status
		want string
	}{
		{
			name: "running",
			st: Status{ID: "op1", Kind: "image.pull", Target: "debian", State: StateRunning,
				Progress: Progress{Phase: "download", Done: 5, Total: 10, Unit: "layers",
					Items: []ItemProgress{{Name: "sha256:ab", State: "done", Done: 3, Total: 3}}},
				StartedAt: at, UpdatedAt: at, Seq: 3},
			want: `{"id":"op1","kind":"image.pull","target":"debian","state":"running",` +
				`"progress":{"phase":"download","done":5,"total":10,"unit":"layers",` +
				`"items":[{"name":"sha256:ab","state":"done","done":3,"total":3}]},` +
				`"started_at":"2025-01-02T03:04:05Z","updated_at":"2025-01-02T03:04:05Z","seq":3}`,
		},
		{
			name: "failed",
			st: Status{ID: "op2", Kind: "vm.create", State: StateFailed, Error: "boom", Err: errors.New("boom"),
				StartedAt: at, UpdatedAt: at, FinishedAt: at, Seq: 2},
			want: `{"id":"op2","kind":"vm.create","state":"failed","progress":{},"error":"boom",` +
				`"started_at":"2025-01-02T03:04:05Z","updated_at":"2025-01-02T03:04:05Z",` +
				`"finished_at":"2025-01-02T03:04:05Z","seq":2}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.st)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON =\n%s\nwant\n%s", b, tt.want)
			}
		})
	}
}
