package cli

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"banger/internal/rpc"
)

// progressMode is how a progress display draws.
type progressMode int

const (
	// progressLines prints a plain line now and then (CI logs, pipes).
	progressLines progressMode = iota
	// progressTTY redraws a multi-line display in place on a terminal.
	progressTTY
	// progressJSON writes every status as one line of JSON (-o json).
	progressJSON
)

const (
	ttyInterval   = 100 * time.Millisecond // at most ~10 frames a second
	linesInterval = 2 * time.Second        // a plain line at most this often within a phase
	maxItemLines  = 10                     // items shown before "… and N more"
	defaultWidth  = 80                     // when the terminal's width is unknown
	minBarWidth   = 10
	maxBarWidth   = 40
)

// ANSI control sequences for the TTY display.
const (
	ansiClearLine  = "\x1b[2K"
	ansiClearBelow = "\x1b[J"
	ansiHideCursor = "\x1b[?25l"
	ansiShowCursor = "\x1b[?25h"
)

// progress renders an async operation's status as the CLI follows it:
// Update from WatchOp's callback, then Done once with the final status.
// Done must be called on every path once Update has been, or a terminal
// is left with its cursor hidden.
type progress struct {
	w     io.Writer
	mode  progressMode
	now   func() time.Time // wall clock; tests inject a fake
	width func() int       // terminal columns, asked before each frame

	// mu is held while writing to w, so frames never interleave.
	mu       sync.Mutex
	last     rpc.Op    // guarded by mu: the latest status seen
	seen     bool      // guarded by mu: whether last holds a status
	meter    rateMeter // guarded by mu: rate of last.Progress.Done
	drawnAt  time.Time // guarded by mu: when the last frame or line was written
	drawn    int       // guarded by mu: lines in the last TTY frame
	hidden   bool      // guarded by mu: whether the cursor is hidden
	lastLine string    // guarded by mu: the last plain line printed
	spin     int       // guarded by mu: spinner frame
	finished bool      // guarded by mu: Done was called
}

// newProgress picks the display: a live multi-line bar on a terminal,
// periodic plain lines otherwise, JSON events with -o json.
func newProgress(w io.Writer, mode progressMode) *progress {
	p := &progress{w: w, mode: mode, now: time.Now, width: func() int { return defaultWidth }}
	if f, ok := w.(*os.File); ok && mode == progressTTY {
		p.width = func() int { return terminalWidth(f) }
	}
	return p
}

// detectProgressMode reports JSON for -o json, TTY when f is a terminal
// that is not TERM=dumb, and plain lines otherwise.
func detectProgressMode(f *os.File, jsonOutput bool) progressMode {
	switch {
	case jsonOutput:
		return progressJSON
	case f != nil && isTerminal(f) && os.Getenv("TERM") != "dumb":
		return progressTTY
	}
	return progressLines
}

// isTerminal reports whether f is a terminal (it answers TCGETS).
func isTerminal(f *os.File) bool {
	var err error
	ok := withFd(f, func(fd int) { _, err = unix.IoctlGetTermios(fd, unix.TCGETS) })
	return ok && err == nil
}

// terminalWidth is f's width in columns, or defaultWidth if unknown.
func terminalWidth(f *os.File) int {
	var ws *unix.Winsize
	var err error
	ok := withFd(f, func(fd int) { ws, err = unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ) })
	if !ok || err != nil || ws.Col == 0 {
		return defaultWidth
	}
	return int(ws.Col)
}

// withFd runs fn on f's descriptor without f.Fd's switch to blocking mode.
func withFd(f *os.File, fn func(fd int)) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) }) == nil
}

// Update shows op. Statuses repeating the last one's Seq are dropped; the
// TTY and lines displays also throttle, but always show a phase change.
func (p *progress) Update(op rpc.Op) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished || (p.seen && op.Seq == p.last.Seq) {
		return
	}
	now := p.now()
	force := p.observeLocked(op, now) || op.Done()
	switch p.mode {
	case progressJSON:
		printJSONLine(p.w, op)
	case progressTTY:
		if force || now.Sub(p.drawnAt) >= ttyInterval {
			p.drawLocked(now)
		}
	default:
		if force || now.Sub(p.drawnAt) >= linesInterval {
			p.printLineLocked(now)
		}
	}
}

// Done shows final whatever the throttle, ends the display with a newline
// and shows the cursor again. A zero final stands for the last status seen
// (a watch that ended early). Calls after the first do nothing.
func (p *progress) Done(final rpc.Op) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	if final.ID == "" && final.State == "" {
		if !p.seen {
			return
		}
		final = p.last
	}
	now := p.now()
	repeat := p.seen && final.Seq == p.last.Seq
	p.observeLocked(final, now)
	switch p.mode {
	case progressJSON:
		if !repeat {
			printJSONLine(p.w, final)
		}
	case progressTTY:
		p.drawLocked(now)
		if p.hidden {
			io.WriteString(p.w, ansiShowCursor)
			p.hidden = false
		}
	default:
		p.printLineLocked(now)
	}
}

// observeLocked records op and feeds the rate meter. It reports whether
// op starts a new phase (the first status does).
func (p *progress) observeLocked(op rpc.Op, now time.Time) bool {
	newPhase := !p.seen || op.Progress.Phase != p.last.Progress.Phase
	if newPhase {
		p.meter = rateMeter{}
	}
	p.meter.observe(now, op.Progress.Done)
	p.last, p.seen = op, true
	return newPhase
}

// drawLocked redraws the TTY frame over the previous one.
func (p *progress) drawLocked(now time.Time) {
	lines := renderFrame(p.last, p.meter.rate, p.width(), p.spin)
	p.spin++
	var b strings.Builder
	if !p.hidden {
		b.WriteString(ansiHideCursor)
		p.hidden = true
	}
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	for _, l := range lines {
		b.WriteString("\r" + ansiClearLine + l + "\n")
	}
	if len(lines) < p.drawn {
		b.WriteString(ansiClearBelow) // the old frame was taller
	}
	p.drawn = len(lines)
	p.drawnAt = now
	io.WriteString(p.w, b.String())
}

// printLineLocked prints the plain line for the last status unless it
// would repeat the previous line word for word.
func (p *progress) printLineLocked(now time.Time) {
	line := progressText(p.last, p.meter.rate)
	p.drawnAt = now
	if line == p.lastLine {
		return
	}
	p.lastLine = line
	io.WriteString(p.w, line+"\n")
}

// progressText is the plain line for op, e.g.
// "pull debian:bookworm: download 45.2 MiB/120.0 MiB (37%) 8.1 MiB/s, 3/7 layers done".
func progressText(op rpc.Op, rate float64) string {
	p := op.Progress
	s := opTitle(op) + ": "
	if op.Done() {
		s += op.State
		if op.Error != "" {
			return s + ": " + op.Error
		}
		if sum := finishSummary(op); sum != "" {
			s += " (" + sum + ")"
		}
		return s
	}
	s += orDefault(p.Phase, "running")
	if amt := formatAmount(p.Done, p.Total, p.Unit); amt != "" {
		s += " " + amt
		if p.Total > 0 {
			s += fmt.Sprintf(" (%d%%)", percentOf(p.Done, p.Total))
		}
	}
	if p.Unit == "bytes" && rate > 0 {
		s += " " + formatRate(rate)
	}
	if len(p.Items) > 0 {
		s += fmt.Sprintf(", %d/%d %s done", finishedItems(p.Items), len(p.Items), itemNoun(op.Kind))
	}
	if p.Message != "" {
		s += ": " + p.Message
	}
	return s
}

// opTitle names op for a reader: "pull debian:bookworm" for an image.pull.
func opTitle(op rpc.Op) string {
	if op.Kind == "" {
		return "operation " + op.ID
	}
	verb := op.Kind[strings.LastIndexByte(op.Kind, '.')+1:]
	if op.Target == "" {
		return verb
	}
	return verb + " " + op.Target
}

// finishSummary is what a finished op moved and how long it took.
func finishSummary(op rpc.Op) string {
	var parts []string
	if op.Progress.Done > 0 {
		parts = append(parts, formatAmount(op.Progress.Done, 0, op.Progress.Unit))
	}
	if !op.StartedAt.IsZero() && op.FinishedAt.After(op.StartedAt) {
		parts = append(parts, "in "+compactDuration(op.FinishedAt.Sub(op.StartedAt)))
	}
	return strings.Join(parts, " ")
}

// itemNoun is what op kind's items are called.
func itemNoun(kind string) string {
	if strings.HasPrefix(kind, "image.") {
		return "layers"
	}
	return "items"
}

// renderFrame lays out the TTY display for op: a line per item (at most
// maxItemLines, running ones first), then the overall line. No line has
// more than width-1 runes: one that fills the last column can wrap on
// some terminals, and a wrapped line breaks the cursor-up redraw.
func renderFrame(op rpc.Op, rate float64, width, spin int) []string {
	if width <= 0 {
		width = defaultWidth
	}
	cols := max(width-1, 1)
	p := op.Progress
	shown, more := visibleItems(p.Items, maxItemLines)

	type row struct{ name, state, amount, pct string }
	rows := make([]row, len(shown))
	var nameW, stateW, amountW int
	for i, it := range shown {
		r := row{shortItemName(it.Name), orDefault(it.State, "-"), formatAmount(it.Done, it.Total, p.Unit), ""}
		if it.Total > 0 {
			r.pct = fmt.Sprintf("%d%%", percentOf(it.Done, it.Total))
		}
		rows[i] = r
		nameW = max(nameW, runeLen(r.name))
		stateW = max(stateW, runeLen(r.state))
		amountW = max(amountW, runeLen(r.amount))
	}

	label := orDefault(p.Phase, "running")
	if op.Done() {
		label = op.State
	}
	stats, note := overallTail(op, rate)
	// A bar gets what its line's columns and numbers leave, up to a
	// point; on a terminal too narrow for a useful bar, the numbers
	// matter more. The overall line lines its bar up with the items'
	// when there is room, and otherwise starts it right after its label.
	itemColW := 2 + nameW + 1 + stateW
	itemBarW := barWidth(cols - itemColW - (amountW + len(" 100%")) - 4)
	labelW := runeLen(label)
	if len(rows) > 0 && barWidth(cols-itemColW-runeLen(stats)-4) > 0 {
		labelW = max(labelW, itemColW)
	}
	barW := barWidth(cols - labelW - runeLen(stats) - 4)

	lines := make([]string, 0, len(rows)+2)
	for i, r := range rows {
		it := shown[i]
		line := "  " + padRight(r.name, nameW) + " " + padRight(r.state, stateW) + " "
		if itemBarW > 0 {
			bar := strings.Repeat(" ", itemBarW+2)
			if it.Total > 0 {
				bar = renderBar(itemBarW, it.Done, it.Total)
			}
			line += bar + " "
		}
		line += padLeft(r.amount, amountW) + " " + padLeft(r.pct, 4)
		lines = append(lines, truncateRunes(strings.TrimRight(line, " "), cols))
	}
	if more > 0 {
		lines = append(lines, truncateRunes(fmt.Sprintf("  … and %d more", more), cols))
	}

	line := padRight(label, labelW) + " "
	switch {
	case barW > 0 && p.Total > 0:
		line += renderBar(barW, p.Done, p.Total) + " "
	case barW > 0 && !op.Done() && stats == "":
		line += spinnerFrame(spin) + " " // no total: show it is alive
	case barW > 0 && !op.Done():
		line += padRight(spinnerFrame(spin), barW+2) + " "
	case barW > 0:
		line += strings.Repeat(" ", barW+3)
	case p.Total == 0 && !op.Done():
		line += spinnerFrame(spin) + " "
	}
	if stats == "" {
		note = strings.TrimPrefix(note, ": ")
	}
	line += stats
	// Cut the note, not the numbers before it, to fit.
	if room := cols - runeLen(line); room >= 4 || runeLen(note) <= room {
		line += truncateRunes(note, room)
	}
	lines = append(lines, truncateRunes(strings.TrimRight(line, " "), cols))
	return lines
}

// barWidth is the cells a bar gets out of room: at most maxBarWidth,
// and none if fewer than minBarWidth.
func barWidth(room int) int {
	if room < minBarWidth {
		return 0
	}
	return min(room, maxBarWidth)
}

// spinnerFrame is the spinner's look in frame n.
func spinnerFrame(n int) string { return string(`|/-\`[n%4]) }

// overallTail is the overall line after its bar: stats (amount, percent,
// then rate and ETA while running or the time taken once finished) and a
// note (": " and the error or the daemon's message) that may be cut short.
func overallTail(op rpc.Op, rate float64) (stats, note string) {
	p := op.Progress
	parts := []string{}
	if amt := formatAmount(p.Done, p.Total, p.Unit); amt != "" {
		parts = append(parts, amt)
	}
	if p.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d%%", percentOf(p.Done, p.Total)))
	}
	if op.Done() {
		if !op.StartedAt.IsZero() && op.FinishedAt.After(op.StartedAt) {
			parts = append(parts, "in "+compactDuration(op.FinishedAt.Sub(op.StartedAt)))
		}
	} else if p.Unit == "bytes" && rate > 0 {
		parts = append(parts, formatRate(rate))
		if d, ok := etaFor(p.Done, p.Total, rate); ok {
			parts = append(parts, "ETA "+compactDuration(d))
		}
	}
	switch {
	case op.Error != "":
		note = ": " + op.Error
	case p.Message != "" && !op.Done():
		note = ": " + p.Message
	}
	return strings.Join(parts, " "), note
}

// renderBar draws done/total as "[=====>    ]" with width cells inside.
func renderBar(width int, done, total int64) string {
	if width < 1 {
		return "[]"
	}
	filled := 0
	if total > 0 && done > 0 {
		filled = int(min(done, total) * int64(width) / total)
	}
	var inner string
	switch {
	case filled >= width:
		inner = strings.Repeat("=", width)
	case total > 0 && done > 0:
		inner = strings.Repeat("=", filled) + ">" + strings.Repeat(" ", width-filled-1)
	default:
		inner = strings.Repeat(" ", width)
	}
	return "[" + inner + "]"
}

// visibleItems orders items running first, then waiting, then finished
// (stable within each), and returns at most n of them and how many more
// there are.
func visibleItems(items []rpc.ItemProgress, n int) ([]rpc.ItemProgress, int) {
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b rpc.ItemProgress) int { return itemRank(a) - itemRank(b) })
	if len(sorted) <= n {
		return sorted, 0
	}
	return sorted[:n], len(sorted) - n
}

// itemRank sorts items: 0 in progress (or failed), 1 idle between steps
// (waiting, or downloaded and waiting to be applied), 2 finished.
func itemRank(it rpc.ItemProgress) int {
	switch {
	case itemFinished(it):
		return 2
	case slices.Contains([]string{"", "waiting", "pending", "queued", "downloaded", "cached"}, strings.ToLower(it.State)):
		return 1
	}
	return 0
}

// itemFinished reports whether an item needs no more work. Item states
// are free-form (an image pull's run waiting, downloading, downloaded or
// cached, applying, done), so this accepts the usual words for the end,
// and a stateless item whose count is complete.
func itemFinished(it rpc.ItemProgress) bool {
	switch strings.ToLower(it.State) {
	case "done", "complete", "completed", "succeeded", "exists", "skipped":
		return true
	case "":
		return it.Total > 0 && it.Done >= it.Total
	}
	return false
}

func finishedItems(items []rpc.ItemProgress) int {
	n := 0
	for _, it := range items {
		if itemFinished(it) {
			n++
		}
	}
	return n
}

// shortItemName shortens a digest ("sha256:3f4e…") to its first 12 hex
// digits and any other long name to 20 runes.
func shortItemName(name string) string {
	digest := name[strings.IndexByte(name, ':')+1:]
	if len(digest) >= 32 && isHexString(digest) {
		return digest[:12]
	}
	return truncateRunes(name, 20)
}

func isHexString(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// formatAmount renders a count in unit: "1.0 MiB/4.0 MiB" for bytes,
// "3/7 layers" otherwise; just the done part when total is unknown, and
// nothing when there is nothing to say.
func formatAmount(done, total int64, unit string) string {
	if done == 0 && total == 0 {
		return ""
	}
	if unit == "bytes" {
		if total > 0 {
			return humanBytes(done) + "/" + humanBytes(total)
		}
		return humanBytes(done)
	}
	s := fmt.Sprint(done)
	if total > 0 {
		s += "/" + fmt.Sprint(total)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

// percentOf is done/total in whole percent, clamped to 0..100.
func percentOf(done, total int64) int {
	if total <= 0 {
		return 0
	}
	return int(min(max(done, 0), total) * 100 / total)
}

func formatRate(bytesPerSec float64) string {
	return humanBytes(int64(math.Round(bytesPerSec))) + "/s"
}

// rateWindow is the time constant of the rate's moving average: a change
// in speed shows about this long after it happens.
const rateWindow = 3 * time.Second

// rateMinInterval is the shortest span the meter measures over; closer
// samples wait to be folded in with later ones, so bursts of updates do
// not turn into wild instantaneous rates.
const rateMinInterval = 200 * time.Millisecond

// rateMeter smooths the rate of change of a growing counter. The zero
// value is ready; rate is 0 until two samples rateMinInterval apart.
type rateMeter struct {
	started bool
	at      time.Time // when done was last folded in
	done    int64
	rate    float64 // units per second
}

// observe folds in the counter's value at t. A counter that goes
// backwards starts the measurement over.
func (m *rateMeter) observe(t time.Time, done int64) {
	if !m.started || done < m.done || t.Before(m.at) {
		*m = rateMeter{started: true, at: t, done: done}
		return
	}
	dt := t.Sub(m.at)
	if dt < rateMinInterval {
		return
	}
	sample := float64(done-m.done) / dt.Seconds()
	if m.rate == 0 {
		m.rate = sample // the first measurement, or the first after a stall
	} else {
		m.rate = ewma(m.rate, sample, dt, rateWindow)
	}
	m.at, m.done = t, done
}

// ewma moves prev toward sample by how much of window dt covers: a sample
// held for one window gets weight 1-1/e, so uneven update intervals
// weigh by time rather than by count.
func ewma(prev, sample float64, dt, window time.Duration) float64 {
	alpha := 1 - math.Exp(-dt.Seconds()/window.Seconds())
	return prev + alpha*(sample-prev)
}

// etaFor is how long the rest of total takes at rate, if that is knowable
// and under 100 hours.
func etaFor(done, total int64, rate float64) (time.Duration, bool) {
	if rate <= 0 || total <= 0 || done >= total {
		return 0, false
	}
	secs := float64(total-done) / rate
	if secs >= (100 * time.Hour).Seconds() {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}

// compactDuration renders d to the second: "45s", "1m05s", "2h03m".
func compactDuration(d time.Duration) string {
	s := int64(max(d.Round(time.Second), 0) / time.Second)
	switch {
	case s >= 3600:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

// truncateRunes cuts s to n runes, ending it with "…" if anything was cut.
func truncateRunes(s string, n int) string {
	if runeLen(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// padRight left-aligns s in n runes; padLeft right-aligns it.
func padRight(s string, n int) string { return s + strings.Repeat(" ", max(n-runeLen(s), 0)) }

func padLeft(s string, n int) string { return strings.Repeat(" ", max(n-runeLen(s), 0)) + s }
