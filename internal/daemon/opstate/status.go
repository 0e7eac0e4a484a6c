package opstate

import (
	"slices"
	"time"
)

// State is where an operation is in its life.
type State string

// The states of an operation. Running is the only unfinished one.
const (
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
)

// Finished reports whether s is a final state.
func (s State) Finished() bool { return s != StateRunning }

// Progress is what a running operation last reported.
type Progress struct {
	Phase   string         `json:"phase,omitempty"`
	Message string         `json:"message,omitempty"`
	Done    int64          `json:"done,omitempty"`
	Total   int64          `json:"total,omitempty"`
	Unit    string         `json:"unit,omitempty"` // "bytes", "layers", ...
	Items   []ItemProgress `json:"items,omitempty"`
}

// ItemProgress is the progress of one part of an operation, such as one
// image layer of a pull.
type ItemProgress struct {
	Name  string `json:"name,omitempty"`
	State string `json:"state,omitempty"`
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"`
}

func (p Progress) clone() Progress {
	p.Items = slices.Clone(p.Items)
	return p
}

// Status is a snapshot of one operation. The registry hands out copies,
// so a caller may keep or change one freely; Result is the exception: it
// is shared as passed to Complete and must not be mutated after that.
type Status struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"`
	Target   string   `json:"target,omitempty"`
	State    State    `json:"state"`
	Progress Progress `json:"progress"`
	// Error is the failure's message; Err is the error itself, for
	// in-process callers that need errors.Is.
	Error      string    `json:"error,omitempty"`
	Err        error     `json:"-"`
	Result     any       `json:"result,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Seq increases by one on every change to the operation.
	Seq uint64 `json:"seq"`
}

func (s Status) clone() Status {
	s.Progress = s.Progress.clone()
	return s
}
