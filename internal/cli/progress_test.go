package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"banger/internal/rpc"
)

const mib = 1 << 20

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// testProgress is a display writing to a buffer, with a fake clock and a
// fixed terminal width.
func testProgress(mode progressMode, width int) (*progress, *bytes.Buffer, *fakeClock) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	p := newProgress(&buf, mode)
	p.now = clk.now
	p.width = func() int { return width }
	return p, &buf, clk
}

// pullOp is a running image pull's status.
func pullOp(seq uint64, phase string, done, total int64, items ...rpc.ItemProgress) rpc.Op {
	return rpc.Op{
		ID: "op1", Kind: "image.pull", Target: "debian:bookworm", State: "running", Seq: seq,
		Progress: rpc.Progress{Phase: phase, Done: done, Total: total, Unit: "bytes", Items: items},
	}
}

func finished(op rpc.Op, state, errMsg string) rpc.Op {
	op.State, op.Error = state, errMsg
	op.Seq++
	return op
}

// layers makes n items in state, each of size bytes with done of them.
func layers(n int, state string, done, size int64) []rpc.ItemProgress {
	var items []rpc.ItemProgress
	for i := range n {
		items = append(items, rpc.ItemProgress{
			Name: fmt.Sprintf("sha256:%02d%062x", i, i), State: state, Done: done, Total: size,
		})
	}
	return items
}

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

func TestProgressLinesThrottle(t *testing.T) {
	p, buf, clk := testProgress(progressLines, 80)
	steps := []struct {
		name    string
		after   time.Duration
		op      rpc.Op
		final   bool
		printed bool
		want    string // in the line printed
	}{
		{"first status prints", 0, pullOp(1, "resolve", 0, 0), false, true, "pull debian:bookworm: resolve"},
		{"phase change prints at once", 100 * time.Millisecond, pullOp(2, "download", 10*mib, 100*mib), false, true, "download 10.0 MiB/100.0 MiB (10%)"},
		{"held back within 2s", time.Second, pullOp(3, "download", 20*mib, 100*mib), false, false, ""},
		{"still held at 1.9s", 900 * time.Millisecond, pullOp(4, "download", 29*mib, 100*mib), false, false, ""},
		{"printed 2s after the last line", 100 * time.Millisecond, pullOp(5, "download", 30*mib, 100*mib), false, true, "download 30.0 MiB/100.0 MiB (30%) 10.0 MiB/s"},
		{"held again", 500 * time.Millisecond, pullOp(6, "download", 45*mib, 100*mib), false, false, ""},
		{"second phase change prints at once", 100 * time.Millisecond, pullOp(7, "flatten", 0, 0), false, true, "pull debian:bookworm: flatten"},
		{"final line always prints", 10 * time.Millisecond, finished(pullOp(7, "flatten", 100*mib, 100*mib), "succeeded", ""), true, true, "pull debian:bookworm: succeeded (100.0 MiB)"},
	}
	for _, st := range steps {
		before := buf.Len()
		clk.advance(st.after)
		if st.final {
			p.Done(st.op)
		} else {
			p.Update(st.op)
		}
		out := buf.String()[before:]
		if !st.printed {
			if out != "" {
				t.Errorf("%s: printed %q, want nothing", st.name, out)
			}
			continue
		}
		if got := lines(out); len(got) != 1 || !strings.Contains(got[0], st.want) {
			t.Errorf("%s: printed %q, want one line containing %q", st.name, out, st.want)
		}
	}
}

func TestProgressLinesFinal(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		final        rpc.Op
		viaUpdateToo bool // the stream delivered the final status before Done
		want         []string
	}{
		{
			name: "succeeded with size and time",
			final: func() rpc.Op {
				o := finished(pullOp(3, "flatten", 120*mib, 120*mib), "succeeded", "")
				o.StartedAt, o.FinishedAt = start, start.Add(14*time.Second)
				return o
			}(),
			want: []string{"pull debian:bookworm: download 1.0 MiB/120.0 MiB (0%)", "pull debian:bookworm: succeeded (120.0 MiB in 14s)"},
		},
		{
			name:  "failed with its error",
			final: finished(pullOp(3, "download", 5*mib, 120*mib), "failed", "fetch layer: connection reset"),
			want:  []string{"pull debian:bookworm: download 1.0 MiB/120.0 MiB (0%)", "pull debian:bookworm: failed: fetch layer: connection reset"},
		},
		{
			name:         "final seen by Update is printed once",
			final:        finished(pullOp(3, "download", 5*mib, 120*mib), "canceled", ""),
			viaUpdateToo: true,
			want:         []string{"pull debian:bookworm: download 1.0 MiB/120.0 MiB (0%)", "pull debian:bookworm: canceled (5.0 MiB)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, buf, clk := testProgress(progressLines, 80)
			p.Update(pullOp(1, "download", 1*mib, 120*mib))
			clk.advance(10 * time.Millisecond)
			if tt.viaUpdateToo {
				p.Update(tt.final)
			}
			p.Done(tt.final)
			p.Done(tt.final) // a second Done does nothing
			if diff := cmp.Diff(tt.want, lines(buf.String())); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProgressText(t *testing.T) {
	items := append(layers(3, "done", 10*mib, 10*mib), layers(4, "downloading", 2*mib, 10*mib)...)
	tests := []struct {
		name string
		op   rpc.Op
		rate float64
		want string
	}{
		{
			name: "bytes with rate and layers",
			op:   pullOp(1, "download", 452*mib/10, 120*mib, items...),
			rate: 8.1 * mib,
			want: "pull debian:bookworm: download 45.2 MiB/120.0 MiB (37%) 8.1 MiB/s, 3/7 layers done",
		},
		{
			name: "other unit, no rate shown",
			op:   rpc.Op{Kind: "vm.create", Target: "web1", State: "running", Progress: rpc.Progress{Phase: "boot", Done: 3, Total: 7, Unit: "steps"}},
			rate: 2,
			want: "create web1: boot 3/7 steps (42%)",
		},
		{
			name: "unknown total has no percent",
			op:   pullOp(1, "download", 12*mib, 0),
			rate: 2 * mib,
			want: "pull debian:bookworm: download 12.0 MiB 2.0 MiB/s",
		},
		{
			name: "message",
			op:   rpc.Op{Kind: "image.pull", Target: "debian:bookworm", State: "running", Progress: rpc.Progress{Phase: "resolve", Message: "docker.io/library/debian:bookworm"}},
			want: "pull debian:bookworm: resolve: docker.io/library/debian:bookworm",
		},
		{
			name: "no kind or phase",
			op:   rpc.Op{ID: "ab12", State: "running"},
			want: "operation ab12: running",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := progressText(tt.op, tt.rate); got != tt.want {
				t.Errorf("progressText = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProgressTTY(t *testing.T) {
	p, buf, clk := testProgress(progressTTY, 80)
	items := layers(3, "downloading", 0, 40*mib)
	steps := []struct {
		name     string
		after    time.Duration
		op       rpc.Op
		final    bool
		drawn    bool
		contains []string
	}{
		{"first frame hides the cursor and does not move up", 0, pullOp(1, "download", 0, 120*mib, items...), false, true, []string{ansiHideCursor, "\r" + ansiClearLine}},
		{"next frame moves up over the last", 200 * time.Millisecond, pullOp(2, "download", 30*mib, 120*mib, items...), false, true, []string{"\x1b[4A", "\r" + ansiClearLine}},
		{"throttled within 100ms", 50 * time.Millisecond, pullOp(3, "download", 40*mib, 120*mib, items...), false, false, nil},
		{"same seq dropped", time.Second, pullOp(3, "download", 40*mib, 120*mib, items...), false, false, nil},
		{"phase change draws at once", 10 * time.Millisecond, pullOp(4, "flatten", 120*mib, 120*mib, items[:1]...), false, true, []string{"\x1b[4A", "flatten", ansiClearBelow}},
		{"final always drawn, cursor shown", 10 * time.Millisecond, finished(pullOp(4, "flatten", 120*mib, 120*mib, items[:1]...), "succeeded", ""), true, true, []string{"\x1b[2A", "succeeded"}},
	}
	for _, st := range steps {
		before := buf.Len()
		clk.advance(st.after)
		if st.final {
			p.Done(st.op)
		} else {
			p.Update(st.op)
		}
		out := buf.String()[before:]
		if !st.drawn {
			if out != "" {
				t.Errorf("%s: drew %q, want nothing", st.name, out)
			}
			continue
		}
		for _, s := range st.contains {
			if !strings.Contains(out, s) {
				t.Errorf("%s: output %q lacks %q", st.name, out, s)
			}
		}
		if before == 0 && regexp.MustCompile(`\x1b\[\d+A`).MatchString(out) {
			t.Errorf("%s: first frame moves the cursor up: %q", st.name, out)
		}
	}
	out := buf.String()
	if !strings.HasSuffix(out, "\n"+ansiShowCursor) {
		t.Errorf("output ends %q, want a newline then the cursor shown", out[max(len(out)-20, 0):])
	}
	if n := strings.Count(out, ansiHideCursor); n != 1 {
		t.Errorf("cursor hidden %d times, want 1", n)
	}
}

// screen is a minimal terminal: it applies the sequences the TTY display
// uses and wraps at width like a real one, so a test sees what a user
// would.
type screen struct {
	width    int
	rows     [][]rune
	row, col int
}

var csiRE = regexp.MustCompile(`^\x1b\[(\??)(\d*)([A-Za-z])`)

func (s *screen) write(t *testing.T, out string) {
	t.Helper()
	for i := 0; i < len(out); {
		if out[i] == 0x1b {
			m := csiRE.FindStringSubmatch(out[i:])
			if m == nil {
				t.Fatalf("unknown escape sequence at %q", out[i:])
			}
			i += len(m[0])
			n, _ := strconv.Atoi(m[2])
			switch {
			case m[1] == "?" && m[2] == "25":
				// cursor visibility
			case m[3] == "A":
				s.row = max(s.row-max(n, 1), 0)
			case m[3] == "K" && n == 2:
				s.grow()
				s.rows[s.row] = nil
			case m[3] == "J" && m[2] == "":
				s.grow()
				s.rows[s.row] = s.rows[s.row][:min(s.col, len(s.rows[s.row]))]
				s.rows = s.rows[:s.row+1]
			default:
				t.Fatalf("unexpected escape sequence %q", m[0])
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(out[i:])
		i += size
		switch r {
		case '\n':
			s.row, s.col = s.row+1, 0
		case '\r':
			s.col = 0
		default:
			if s.col >= s.width { // autowrap
				s.row, s.col = s.row+1, 0
			}
			s.grow()
			for len(s.rows[s.row]) <= s.col {
				s.rows[s.row] = append(s.rows[s.row], ' ')
			}
			s.rows[s.row][s.col] = r
			s.col++
		}
	}
}

func (s *screen) grow() {
	for len(s.rows) <= s.row {
		s.rows = append(s.rows, nil)
	}
}

// text is the screen's rows, without trailing blank rows.
func (s *screen) text() []string {
	var out []string
	for _, r := range s.rows {
		out = append(out, strings.TrimRight(string(r), " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

func TestProgressTTYScreen(t *testing.T) {
	for _, width := range []int{40, 80} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			p, buf, clk := testProgress(progressTTY, width)
			ops := []rpc.Op{
				pullOp(1, "resolve", 0, 0),
				pullOp(2, "download", 10*mib, 600*mib, layers(12, "downloading", 1*mib, 50*mib)...),
				pullOp(3, "download", 300*mib, 600*mib, append(layers(6, "done", 50*mib, 50*mib), layers(6, "downloading", 25*mib, 50*mib)...)...),
				pullOp(4, "flatten", 600*mib, 600*mib, layers(2, "applying", 50*mib, 50*mib)...),
			}
			for _, op := range ops {
				clk.advance(time.Second)
				p.Update(op)
			}
			final := finished(ops[len(ops)-1], "succeeded", "")
			p.Done(final)
			s := &screen{width: width}
			s.write(t, buf.String())
			want := renderFrame(final, 0, width, 0)
			if diff := cmp.Diff(want, s.text()); diff != "" {
				t.Errorf("screen after the last frame (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBar(t *testing.T) {
	tests := []struct {
		width       int
		done, total int64
		want        string
	}{
		{10, 0, 100, "[          ]"},
		{10, 1, 100, "[>         ]"},
		{10, 50, 100, "[=====>    ]"},
		{10, 99, 100, "[=========>]"},
		{10, 100, 100, "[==========]"},
		{10, 150, 100, "[==========]"},
		{4, 1, 3, "[=>  ]"},
		{10, 5, 0, "[          ]"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d@%d", tt.done, tt.total, tt.width), func(t *testing.T) {
			if got := renderBar(tt.width, tt.done, tt.total); got != tt.want {
				t.Errorf("renderBar = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProgressFrameWidth(t *testing.T) {
	long := rpc.Op{
		ID: "op1", Kind: "image.pull", Target: "registry.example.com/some/very/long/repository:tag", State: "running", Seq: 1,
		Progress: rpc.Progress{
			Phase: "download", Done: 3 << 40, Total: 7 << 40, Unit: "bytes",
			Message: strings.Repeat("a long message from the daemon ", 5),
			Items: append(layers(12, "downloading", 200<<30, 900<<30),
				rpc.ItemProgress{Name: "a-layer-with-a-name-that-is-not-a-digest", State: "some-long-state-name", Done: 1, Total: 2}),
		},
	}
	failed := finished(long, "failed", strings.Repeat("error ", 30))
	escapes := regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\r`)
	for _, width := range []int{20, 40, 80, 200} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			p, buf, clk := testProgress(progressTTY, width)
			p.Update(long)
			clk.advance(time.Second)
			long.Seq, long.Progress.Done = 2, 4<<40
			p.Update(long)
			p.Done(failed)
			for _, l := range lines(escapes.ReplaceAllString(buf.String(), "")) {
				if n := utf8.RuneCountInString(l); n >= width {
					t.Errorf("line of %d runes at width %d: %q", n, width, l)
				}
			}
			if width >= 200 && !strings.Contains(buf.String(), "[=") {
				t.Errorf("no bar at width %d:\n%s", width, buf.String())
			}
		})
	}
}

func TestProgressItemsCap(t *testing.T) {
	tests := []struct {
		name      string
		items     []rpc.ItemProgress
		wantState []string // states of the item lines, top down
		wantMore  string
	}{
		{
			name:      "running first, then idle, then done, capped at 10",
			items:     append(append(layers(10, "done", 5, 5), layers(2, "waiting", 0, 5)...), layers(3, "downloading", 1, 5)...),
			wantState: []string{"downloading", "downloading", "downloading", "waiting", "waiting", "done", "done", "done", "done", "done"},
			wantMore:  "… and 5 more",
		},
		{
			name:      "ten fit without a more line",
			items:     append(layers(9, "done", 5, 5), layers(1, "applying", 5, 5)...),
			wantState: []string{"applying", "done", "done", "done", "done", "done", "done", "done", "done", "done"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := renderFrame(pullOp(1, "download", 1, 100, tt.items...), 0, 120, 0)
			var states []string
			more := ""
			for _, l := range got[:len(got)-1] {
				f := strings.Fields(l)
				if f[0] == "…" {
					more = l
					continue
				}
				states = append(states, f[1])
			}
			if diff := cmp.Diff(tt.wantState, states); diff != "" {
				t.Errorf("item states (-want +got):\n%s\nframe:\n%s", diff, strings.Join(got, "\n"))
			}
			if strings.TrimSpace(more) != tt.wantMore {
				t.Errorf("more line = %q, want %q", more, tt.wantMore)
			}
		})
	}
}

func TestProgressUnknownTotal(t *testing.T) {
	tests := []struct {
		name string
		op   rpc.Op
		want string
	}{
		{"bytes", pullOp(1, "download", 5*mib, 0, rpc.ItemProgress{Name: "sha256:" + strings.Repeat("ab", 32), State: "downloading", Done: 5 * mib}), "5.0 MiB"},
		{"other unit", rpc.Op{Kind: "kernel.fetch", State: "running", Progress: rpc.Progress{Phase: "unpack", Done: 12, Unit: "files"}}, "12 files"},
	}
	for _, tt := range tests {
		for _, width := range []int{80, 30} { // with room for a bar, and without
			t.Run(fmt.Sprintf("%s@%d", tt.name, width), func(t *testing.T) {
				frames := [][]string{renderFrame(tt.op, mib, width, 0), renderFrame(tt.op, mib, width, 1)}
				text := []string{progressText(tt.op, mib)}
				for _, f := range frames {
					text = append(text, f...)
				}
				for _, l := range text {
					if strings.Contains(l, "%") || strings.Contains(l, "=") || strings.Contains(l, "ETA") {
						t.Errorf("line %q has a percent, bar fill or ETA with no total", l)
					}
				}
				overall := frames[0][len(frames[0])-1]
				if !strings.Contains(overall, tt.want) {
					t.Errorf("overall line %q lacks %q", overall, tt.want)
				}
				if next := frames[1][len(frames[1])-1]; next == overall {
					t.Errorf("spinner did not turn: %q, then %q", overall, next)
				}
			})
		}
	}
}

func TestProgressJSON(t *testing.T) {
	tests := []struct {
		name    string
		updates []uint64
		final   uint64
		want    []uint64
	}{
		{"repeated seqs skipped, final already seen", []uint64{1, 1, 2, 2, 3}, 3, []uint64{1, 2, 3}},
		{"final after the updates", []uint64{1, 2}, 3, []uint64{1, 2, 3}},
		{"only a final", nil, 7, []uint64{7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, buf, clk := testProgress(progressJSON, 80)
			for _, seq := range tt.updates {
				p.Update(pullOp(seq, "download", int64(seq)*mib, 10*mib))
				clk.advance(time.Millisecond) // JSON is never throttled
			}
			final := pullOp(tt.final, "download", 10*mib, 10*mib)
			final.State = "succeeded"
			p.Done(final)
			var got []uint64
			for _, l := range lines(buf.String()) {
				var op rpc.Op
				if err := json.Unmarshal([]byte(l), &op); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if op.ID != "op1" || op.Progress.Total != 10*mib {
					t.Errorf("decoded %+v, want op1 with total 10 MiB", op)
				}
				got = append(got, op.Seq)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("seqs written (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRateMeter(t *testing.T) {
	type sample struct {
		at   time.Duration
		done int64
	}
	steady := func(from, to time.Duration, start, perSec int64) []sample {
		var s []sample
		for at := from; at <= to; at += time.Second {
			s = append(s, sample{at, start + perSec*int64((at-from)/time.Second)})
		}
		return s
	}
	tests := []struct {
		name    string
		samples []sample
		want    float64
	}{
		{"one sample has no rate", []sample{{0, 100}}, 0},
		{"steady 1000/s", steady(0, 5*time.Second, 0, 1000), 1000},
		{"samples under 200ms apart wait", []sample{{0, 0}, {50 * time.Millisecond, 50}, {150 * time.Millisecond, 150}}, 0},
		{"then fold in together", []sample{{0, 0}, {50 * time.Millisecond, 50}, {150 * time.Millisecond, 150}, {200 * time.Millisecond, 200}}, 1000},
		{"a counter going back starts over", []sample{{0, 0}, {time.Second, 1000}, {2 * time.Second, 500}}, 0},
		{"and measures from there", []sample{{0, 0}, {time.Second, 1000}, {2 * time.Second, 500}, {4 * time.Second, 4500}}, 2000},
		// 1000 + (1-e^(-1/3))·(2000-1000)
		{"a jump is smoothed", []sample{{0, 0}, {time.Second, 1000}, {2 * time.Second, 3000}}, 1283.469},
		// 5000 - e^(-9/3)·(5000-1000): the old speed is mostly gone after three windows.
		{"the new speed takes over", append(steady(0, 10*time.Second, 0, 1000)[:10], steady(10*time.Second, 19*time.Second, 10000, 5000)...), 4800.852},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			var m rateMeter
			for _, s := range tt.samples {
				m.observe(start.Add(s.at), s.done)
			}
			if math.Abs(m.rate-tt.want) > 0.01 {
				t.Errorf("rate = %.3f, want %.3f", m.rate, tt.want)
			}
		})
	}
}

func TestRateEWMA(t *testing.T) {
	tests := []struct {
		prev, sample float64
		dt           time.Duration
		want         float64
	}{
		{0, 100, 3 * time.Second, 63.212}, // one window: 1-1/e of the way
		{50, 100, 0, 50},
		{50, 100, time.Hour, 100},
		{100, 0, 3 * time.Second, 36.788},
	}
	for _, tt := range tests {
		if got := ewma(tt.prev, tt.sample, tt.dt, 3*time.Second); math.Abs(got-tt.want) > 0.001 {
			t.Errorf("ewma(%v, %v, %v) = %.4f, want %.3f", tt.prev, tt.sample, tt.dt, got, tt.want)
		}
	}
}

func TestETA(t *testing.T) {
	tests := []struct {
		done, total int64
		rate        float64
		want        string // "" for no ETA
	}{
		{0, 100, 10, "10s"},
		{0, 650, 10, "1m05s"},
		{50 * mib, 100 * mib, mib, "50s"},
		{0, 3725, 1, "1h02m"},
		{50, 100, 0, ""},
		{100, 100, 10, ""},
		{0, 0, 10, ""},
		{0, 1 << 50, 1, ""}, // beyond 100 hours
	}
	for _, tt := range tests {
		d, ok := etaFor(tt.done, tt.total, tt.rate)
		got := ""
		if ok {
			got = compactDuration(d)
		}
		if got != tt.want {
			t.Errorf("etaFor(%d, %d, %v) = %q (ok %v), want %q", tt.done, tt.total, tt.rate, got, ok, tt.want)
		}
	}
}

func TestETAFormat(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{5 * time.Second, "5s"},
		{59*time.Second + 400*time.Millisecond, "59s"},
		{59*time.Second + 600*time.Millisecond, "1m00s"},
		{65 * time.Second, "1m05s"},
		{time.Hour + 2*time.Minute + 5*time.Second, "1h02m"},
		{30 * time.Hour, "30h00m"},
	}
	for _, tt := range tests {
		if got := compactDuration(tt.d); got != tt.want {
			t.Errorf("compactDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestProgressShortItemName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"sha256:" + strings.Repeat("0123456789abcdef", 4), "0123456789ab"},
		{strings.Repeat("0123456789abcdef", 4), "0123456789ab"},
		{"3f4e5d6c7b8a", "3f4e5d6c7b8a"},
		{"vmlinux", "vmlinux"},
		{"a-name-much-longer-than-twenty", "a-name-much-longer-…"},
	}
	for _, tt := range tests {
		if got := shortItemName(tt.name); got != tt.want {
			t.Errorf("shortItemName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestDetectProgressMode(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	// A pseudo-terminal stands in for a user's terminal.
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (%v); the terminal cases need one", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("cannot open the pseudo-terminal's other end: %v", err)
	}
	defer pts.Close()
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 123}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		f     *os.File
		term  string
		json  bool
		want  progressMode
		width int
	}{
		{"pipe", w, "xterm", false, progressLines, defaultWidth},
		{"pipe with -o json", w, "xterm", true, progressJSON, defaultWidth},
		{"terminal", pts, "xterm-256color", false, progressTTY, 123},
		{"dumb terminal", pts, "dumb", false, progressLines, 123},
		{"terminal with -o json", pts, "xterm", true, progressJSON, 123},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TERM", tt.term)
			if got := detectProgressMode(tt.f, tt.json); got != tt.want {
				t.Errorf("detectProgressMode = %v, want %v", got, tt.want)
			}
			if got := terminalWidth(tt.f); got != tt.width {
				t.Errorf("terminalWidth = %d, want %d", got, tt.width)
			}
		})
	}
	if got := newProgress(pts, progressTTY).width(); got != 123 {
		t.Errorf("newProgress on a terminal: width %d, want 123", got)
	}
}
