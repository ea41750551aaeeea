package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Units of a metric; they decide how values are printed and plotted.
const (
	unitBytes   = "bytes"
	unitCount   = "count"
	unitSeconds = "seconds"
	unitBool    = "bool" // 1 yes, 0 no
)

// result is what one scenario measured.
type result struct {
	Scenario string   `json:"scenario"`
	Seconds  float64  `json:"seconds"`
	Metrics  []metric `json:"metrics"`
	Notes    []string `json:"notes,omitempty"`  // what a reader should see beside the numbers
	Errors   []string `json:"errors,omitempty"` // the scenario could not run (or left goroutines)
	Panels   []panel  `json:"series,omitempty"` // over time, for -plot and -json
}

// metric is one row of the table: a measurement of both variants and the bound the leaksafe
// variant must hold. Symptom marks the rows where the naive variant is expected to break the
// bound: that is the incident showing. A symptom row whose naive variant held does not fail
// the run (its exit code is about leaksafe), but the table warns, and the smoke test fails:
// a naive model that no longer breaks proves nothing about the fix.
type metric struct {
	Name     string  `json:"metric"`
	Unit     string  `json:"unit"`
	Naive    float64 `json:"naive"`
	Leaksafe float64 `json:"leaksafe"`
	Bound    bound   `json:"bound"`
	Symptom  bool    `json:"symptom"`

	NaiveBreaks bool   `json:"naive_breaks_bound"`
	Pass        bool   `json:"pass"`
	Verdict     string `json:"verdict"`
}

// bound is a limit on a value: Op is "<=", ">=" or "==".
type bound struct {
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

func atMost(v float64) bound  { return bound{"<=", v} }
func atLeast(v float64) bound { return bound{">=", v} }
func exactly(v float64) bound { return bound{"==", v} }

func (b bound) holds(v float64) bool {
	switch b.Op {
	case "<=":
		return v <= b.Value
	case ">=":
		return v >= b.Value
	case "==":
		return v == b.Value
	}
	return false
}

func (b bound) format(unit string) string {
	op := map[string]string{"<=": "≤ ", ">=": "≥ ", "==": "= "}[b.Op]
	if unit == unitBool {
		return formatValue(b.Value, unit)
	}
	return op + formatValue(b.Value, unit)
}

// judge sets the verdict of a metric from its values and bound.
func (m *metric) judge() {
	m.Pass = m.Bound.holds(m.Leaksafe) && !math.IsNaN(m.Leaksafe)
	m.NaiveBreaks = !m.Bound.holds(m.Naive)
	switch {
	case !m.Pass:
		m.Verdict = "FAIL"
	case m.NaiveBreaks:
		m.Verdict = "fixed"
	case m.Symptom:
		m.Verdict = "ok (naive held too)"
	default:
		m.Verdict = "ok"
	}
}

// panel is one chart: a metric over time (or over work done), both variants.
type panel struct {
	Title    string    `json:"title"`
	X        string    `json:"x"`
	Y        string    `json:"y"`
	Unit     string    `json:"unit"`
	Naive    []point   `json:"naive"`
	Leaksafe []point   `json:"leaksafe"`
	Marks    []refLine `json:"marks,omitempty"` // horizontal reference lines (caps, budgets)
}

type point [2]float64

type refLine struct {
	Label string  `json:"label"`
	Y     float64 `json:"y"`
}

// summary is the progress line printed when a scenario ends.
func (r *result) summary() string {
	var parts []string
	for _, m := range r.Metrics {
		if !m.Symptom && m.Pass {
			continue
		}
		s := fmt.Sprintf("%s %s → %s", m.Name, formatValue(m.Naive, m.Unit), formatValue(m.Leaksafe, m.Unit))
		if !m.Pass {
			s += " FAIL"
		}
		parts = append(parts, s)
	}
	for _, e := range r.Errors {
		parts = append(parts, "ERROR "+e)
	}
	if len(parts) == 0 {
		return "done"
	}
	return "naive → leaksafe: " + strings.Join(parts, "; ")
}

// report is the whole run: what -json prints.
type report struct {
	Pass      bool      `json:"pass"`
	Failures  []string  `json:"failures"`
	Seconds   float64   `json:"seconds"`
	Duration  string    `json:"duration"`
	Scale     float64   `json:"scale"`
	Smoke     bool      `json:"smoke"`
	Scenarios []*result `json:"scenarios"`

	naiveHeld []string // symptom rows whose naive variant held the bound: the incident did not show
}

func (rep *report) add(r *result) {
	for i := range r.Metrics {
		m := &r.Metrics[i]
		m.judge()
		if !m.Pass {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %s: leaksafe %s, bound %s",
				r.Scenario, m.Name, formatValue(m.Leaksafe, m.Unit), m.Bound.format(m.Unit)))
		}
		if m.Symptom && !m.NaiveBreaks {
			rep.naiveHeld = append(rep.naiveHeld, r.Scenario+": "+m.Name)
		}
	}
	for _, e := range r.Errors {
		rep.Failures = append(rep.Failures, r.Scenario+": "+e)
	}
	rep.Scenarios = append(rep.Scenarios, r)
}

func (rep *report) writeJSON(w io.Writer) error {
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func (rep *report) writeTable(w io.Writer) error {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tNAIVE\tLEAKSAFE\tBOUND (leaksafe)\tVERDICT")
	for _, r := range rep.Scenarios {
		for _, m := range r.Metrics {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, m.Name,
				formatValue(m.Naive, m.Unit), formatValue(m.Leaksafe, m.Unit), m.Bound.format(m.Unit), m.Verdict)
		}
		if len(r.Metrics) == 0 {
			fmt.Fprintf(tw, "%s\t(no result)\t\t\t\tFAIL\n", r.Scenario)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Scenarios {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s: %s\n", r.Scenario, n)
		}
	}
	fmt.Fprintln(w)
	if len(rep.naiveHeld) > 0 {
		fmt.Fprintf(w, "WARNING: the naive variant did not show its incident on %d row(s): %s\n",
			len(rep.naiveHeld), strings.Join(rep.naiveHeld, "; "))
	}
	if rep.Pass {
		_, err := fmt.Fprintf(w, "PASS: every leaksafe variant held its bound (%.1fs)\n", rep.Seconds)
		return err
	}
	_, err := fmt.Fprintf(w, "FAIL (%.1fs): %d leaksafe bound(s) broken or scenario(s) failed\n", rep.Seconds, len(rep.Failures))
	return err
}

// formatValue prints a value in its unit, short enough for a table cell.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case unitBytes:
		return formatBytes(v)
	case unitSeconds:
		d := time.Duration(v * float64(time.Second))
		switch {
		case d >= 10*time.Second:
			return d.Round(100 * time.Millisecond).String()
		case d >= time.Millisecond:
			return d.Round(time.Millisecond).String()
		}
		return d.Round(time.Microsecond).String()
	case unitBool:
		if v != 0 {
			return "yes"
		}
		return "no"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return groupThousands(int64(v))
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func formatBytes(v float64) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	const unit = 1024
	if v < unit {
		return fmt.Sprintf("%s%.0f B", sign, v)
	}
	exp, div := 0, float64(unit)
	for n := v / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%s%.1f %ciB", sign, v/div, "KMGTP"[exp])
}

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

var (
	naiveColor    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	leaksafeColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	markColor     = color.RGBA{R: 0x70, G: 0x70, B: 0x70, A: 0xff}
)

// writePlots writes <dir>/<scenario>.png for every scenario that recorded panels: one chart
// per panel, stacked, each with both variants.
func writePlots(dir string, results []*result) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, r := range results {
		if len(r.Panels) == 0 {
			continue
		}
		name := filepath.Join(dir, r.Scenario+".png")
		if err := writePlot(name, r.Panels); err != nil {
			return files, fmt.Errorf("%s: %w", name, err)
		}
		files = append(files, name)
	}
	return files, nil
}

func writePlot(name string, panels []panel) error {
	const width, rowHeight = 7 * vg.Inch, 3 * vg.Inch
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p, err := newPlot(pn)
		if err != nil {
			return err
		}
		plots[i] = []*plot.Plot{p}
	}
	img := vgimg.NewWith(vgimg.UseWH(width, rowHeight*vg.Length(len(panels))), vgimg.UseDPI(110),
		vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPlot(pn panel) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = pn.Title
	p.X.Label.Text = pn.X
	scale, yLabel := 1.0, pn.Y
	if pn.Unit == unitBytes {
		top := 0.0
		for _, pts := range [][]point{pn.Naive, pn.Leaksafe} {
			for _, pt := range pts {
				top = max(top, pt[1])
			}
		}
		for _, m := range pn.Marks {
			top = max(top, m.Y)
		}
		switch {
		case top >= 1<<30:
			scale, yLabel = 1<<30, pn.Y+" (GiB)"
		case top >= 1<<20:
			scale, yLabel = 1<<20, pn.Y+" (MiB)"
		default:
			scale, yLabel = 1<<10, pn.Y+" (KiB)"
		}
	}
	p.Y.Label.Text = yLabel
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true

	xmax := 0.0
	for _, s := range []struct {
		name  string
		pts   []point
		color color.Color
		dash  []vg.Length
	}{
		{"naive", pn.Naive, naiveColor, []vg.Length{vg.Points(6), vg.Points(3)}},
		{"leaksafe", pn.Leaksafe, leaksafeColor, nil},
	} {
		if len(s.pts) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(s.pts))
		for i, pt := range s.pts {
			xys[i].X, xys[i].Y = pt[0], pt[1]/scale
			xmax = max(xmax, pt[0])
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width, l.Dashes = s.color, vg.Points(2), s.dash
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	for _, m := range pn.Marks {
		xys := plotter.XYs{{X: 0, Y: m.Y / scale}, {X: xmax, Y: m.Y / scale}}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width, l.Dashes = markColor, vg.Points(1), []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
		p.Legend.Add(m.Label, l)
	}
	p.Y.Max *= 1.15 // headroom: a line at the cap stays visible under the frame
	return p, nil
}
