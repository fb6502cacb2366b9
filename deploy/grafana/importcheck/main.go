// Command importcheck decodes Grafana dashboard JSON files with the strict decoder of the Grafana
// Foundation SDK (Grafana Labs' Go types generated from the schemas Grafana publishes: the
// dashboard kind, every built-in panel's options and field config, Prometheus queries), the way
// a dashboard meets Grafana's schema when it is imported.
//
//	importcheck -sdk SDK_DIR FILE...
//
// SDK_DIR is the SDK module's directory in the module cache (its source gives the enum values:
// see enums.go). For each file it prints one JSON report on stdout and exits 1 when any file
// has a problem:
//   - a field the schema does not know, at any depth (a typo, a field at the wrong level),
//     field config defaults and overrides included (the SDK's panel decoder reads those
//     leniently, so they get a strict pass of their own here)
//   - a value of the wrong type, a required field that is null, or missing where Grafana does not
//     fill it in (a panel's type, a query's expr, ...)
//   - an enum value that is not one of its type's constants (a legend's displayMode "tabel")
//   - a panel type without a schema here (no built-in panel plugin of that id)
//   - a query whose datasource type (its own, else its panel's) is not Prometheus, the only
//     query schema registered
//   - what the schema's validation rules reject (e.g. fiscalYearStartMonth >= 12)
//
// Not checked: a query variable's query object (the schema leaves it untyped), and anything a
// running Grafana decides (the datasource's existence, plugin versions, the PromQL itself, which
// tests/unit/test_grafana_dashboard.py checks with promtool).
//
// Two kinds of findings are reported as "defaulted", not as problems, because Grafana fills
// them in when it loads the dashboard: a panel option or custom field config that the file
// leaves out (the panel plugin's defaults apply), and a variable's current text/value (resolved
// from its query). The top-level __requires, __inputs and __elements are export metadata that
// Grafana's importer reads; they are not part of the dashboard schema and are set aside.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"

	"github.com/grafana/grafana-foundation-sdk/go/annotationslist"
	"github.com/grafana/grafana-foundation-sdk/go/barchart"
	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/candlestick"
	"github.com/grafana/grafana-foundation-sdk/go/canvas"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/dashboardlist"
	"github.com/grafana/grafana-foundation-sdk/go/datagrid"
	"github.com/grafana/grafana-foundation-sdk/go/debug"
	"github.com/grafana/grafana-foundation-sdk/go/gauge"
	"github.com/grafana/grafana-foundation-sdk/go/geomap"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/histogram"
	"github.com/grafana/grafana-foundation-sdk/go/logs"
	"github.com/grafana/grafana-foundation-sdk/go/news"
	"github.com/grafana/grafana-foundation-sdk/go/nodegraph"
	"github.com/grafana/grafana-foundation-sdk/go/piechart"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/statushistory"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/text"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/grafana/grafana-foundation-sdk/go/trend"
	"github.com/grafana/grafana-foundation-sdk/go/xychart"
)

// Export metadata that Grafana's importer consumes, outside the dashboard schema.
var importKeys = []string{"__requires", "__inputs", "__elements"}

const missing = "required field is missing from input"

// Where a missing "required" field is one Grafana supplies on load.
var defaulted = regexp.MustCompile(
	`^panels\[\d+\](\.panels\[\d+\])?\.(options|fieldConfig\.defaults\.custom)\.` +
		`|^templating\.list\[\d+\]\.current\.(text|value)$`)

type report struct {
	File      string         `json:"file"`
	Panels    map[string]int `json:"panels"`  // panel type -> count, rows and nested panels included
	Queries   map[string]int `json:"queries"` // query schema that decoded each target -> count
	SetAside  []string       `json:"set_aside"`
	Defaulted []string       `json:"defaulted"`
	Problems  []string       `json:"problems"`
}

func register() map[string]bool {
	runtime := cog.NewRuntime()
	panels := map[string]bool{"row": true}
	for _, config := range []func() variants.PanelcfgConfig{
		annotationslist.VariantConfig, barchart.VariantConfig, bargauge.VariantConfig,
		candlestick.VariantConfig, canvas.VariantConfig, dashboardlist.VariantConfig,
		datagrid.VariantConfig, debug.VariantConfig, gauge.VariantConfig, geomap.VariantConfig,
		heatmap.VariantConfig, histogram.VariantConfig, logs.VariantConfig, news.VariantConfig,
		nodegraph.VariantConfig, piechart.VariantConfig, stat.VariantConfig,
		statetimeline.VariantConfig, statushistory.VariantConfig, table.VariantConfig,
		text.VariantConfig, timeseries.VariantConfig, trend.VariantConfig, xychart.VariantConfig,
	} {
		variant := config()
		runtime.RegisterPanelcfgVariant(variant)
		panels[variant.Identifier] = true
	}
	runtime.RegisterDataqueryVariant(prometheus.VariantConfig())
	return panels
}

func buildErrors(err error) cog.BuildErrors {
	var errs cog.BuildErrors
	if errors.As(err, &errs) {
		return errs
	}
	var one *cog.BuildError
	if errors.As(err, &one) {
		return cog.BuildErrors{one}
	}
	return cog.BuildErrors{{Path: "dashboard", Message: err.Error()}}
}

// The part of a panel that the checks after the decoders read from the file itself.
type rawPanel struct {
	Type        string            `json:"type"`
	Datasource  *datasourceRef    `json:"datasource"`
	FieldConfig json.RawMessage   `json:"fieldConfig"`
	Targets     []json.RawMessage `json:"targets"`
	Panels      []json.RawMessage `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
}

// The strict panel decoder decodes fieldConfig leniently (only defaults.custom strictly): this
// path's plain JSON errors are replaced by the strict fieldConfig pass in checkPanel.
var fieldConfigPath = regexp.MustCompile(`^panels\[\d+\](\.panels\[\d+\])?\.fieldConfig$`)

func check(path string, knownPanels map[string]bool, enums *enumSets) (report, error) {
	r := report{File: path, Panels: map[string]int{}, Queries: map[string]int{},
		SetAside: []string{}, Defaulted: []string{}, Problems: []string{}}
	raw, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		r.Problems = append(r.Problems, "not a JSON object: "+err.Error())
		return r, nil
	}
	for _, key := range importKeys {
		if _, ok := fields[key]; ok {
			r.SetAside = append(r.SetAside, key)
			delete(fields, key)
		}
	}
	raw, _ = json.Marshal(fields)

	// The strict decoder collects every error, but returns a non-nil empty error list from each
	// nested object even when it is fine, and drops that object: its result is only its errors.
	// The lenient decoder (the SDK's UnmarshalJSON, same types and variants) gives the structure
	// for the schema's validation rules.
	var strict dashboard.Dashboard
	if err := strict.UnmarshalJSONStrict(raw); err != nil {
		for _, e := range buildErrors(err) {
			switch {
			case e.Message == missing && defaulted.MatchString(e.Path):
				r.Defaulted = append(r.Defaulted, e.Path)
			case !fieldConfigPath.MatchString(e.Path):
				r.Problems = append(r.Problems, e.Error())
			}
		}
	}
	var panels []json.RawMessage
	if json.Unmarshal(fields["panels"], &panels) == nil { // else the strict pass reported it
		for i, p := range panels {
			checkPanel(&r, fmt.Sprintf("panels[%d]", i), p, knownPanels, true)
		}
	}

	var board dashboard.Dashboard
	if err := json.Unmarshal(raw, &board); err != nil {
		if len(r.Problems) == 0 { // else the strict passes said it, with a path
			r.Problems = append(r.Problems, "decode: "+err.Error())
		}
	} else {
		if err := board.Validate(); err != nil {
			for _, e := range buildErrors(err) {
				r.Problems = append(r.Problems, "validate: "+e.Error())
			}
		}
		outside, err := enums.check("", reflect.ValueOf(board))
		if err != nil {
			return r, err
		}
		r.Problems = append(r.Problems, outside...)
	}
	sort.Strings(r.Problems)
	return r, nil
}

// checkPanel adds what the dashboard decoder leaves out: the panel type's schema, a strict pass
// over fieldConfig (defaults and overrides; defaults.custom is the panel decoder's), and the
// query schema of each target, which is the target's own datasource type, else its panel's
// (the decoder reads a target's type only from the target, and leaves targets without one
// unchecked, as unknown queries).
func checkPanel(r *report, where string, raw json.RawMessage, known map[string]bool, top bool) {
	var p rawPanel
	if json.Unmarshal(raw, &p) != nil {
		return // a panel that is not an object, or a field of the wrong type: reported already
	}
	r.Panels[p.Type]++
	if p.Type == "row" {
		if top { // a row's panels are the panels of a collapsed row, one level deep
			for j, child := range p.Panels {
				checkPanel(r, fmt.Sprintf("%s.panels[%d]", where, j), child, known, false)
			}
		}
		return
	}
	if !known[p.Type] {
		r.Problems = append(r.Problems,
			fmt.Sprintf("%s.type: no schema for panel type %q", where, p.Type))
	}
	if len(p.FieldConfig) > 0 && string(p.FieldConfig) != "null" {
		var config dashboard.FieldConfigSource
		if err := config.UnmarshalJSONStrict(p.FieldConfig); err != nil {
			for _, e := range cog.MakeBuildErrors(where+".fieldConfig", err) {
				r.Problems = append(r.Problems, e.Error())
			}
		}
	}
	panelType := ""
	if p.Datasource != nil {
		panelType = p.Datasource.Type
	}
	for i, target := range p.Targets {
		var own struct {
			Datasource *datasourceRef `json:"datasource"`
		}
		_ = json.Unmarshal(target, &own) // a wrong type here is the decoder's to report
		kind := panelType
		if own.Datasource != nil && own.Datasource.Type != "" {
			kind = own.Datasource.Type
		}
		if kind == "" {
			kind = "unknown"
		}
		r.Queries[kind]++
		at := fmt.Sprintf("%s.targets[%d]", where, i)
		if kind != "prometheus" {
			r.Problems = append(r.Problems,
				fmt.Sprintf("%s: datasource type %q, not Prometheus", at, kind))
			continue
		}
		if own.Datasource == nil || own.Datasource.Type == "" { // the decoder did not check it
			_, err := cog.NewRuntime().StrictUnmarshalDataquery(target, kind)
			if err != nil {
				for _, e := range cog.MakeBuildErrors(at, err) {
					r.Problems = append(r.Problems, e.Error())
				}
			}
		}
	}
}

func main() {
	sdk := flag.String("sdk", "", "the Grafana Foundation SDK module's directory (its enum values)")
	flag.Parse()
	if *sdk == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: importcheck -sdk SDK_DIR DASHBOARD.json...")
		os.Exit(2)
	}
	enums, err := newEnumSets(*sdk)
	if err != nil {
		fmt.Fprintln(os.Stderr, "importcheck:", err)
		os.Exit(2)
	}
	knownPanels := register()
	failed := false
	out := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		r, err := check(path, knownPanels, enums)
		if err != nil {
			fmt.Fprintln(os.Stderr, "importcheck:", err)
			os.Exit(2)
		}
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "importcheck:", err)
			os.Exit(2)
		}
		failed = failed || len(r.Problems) > 0
	}
	if failed {
		os.Exit(1)
	}
}
