package main

// The SDK's enums are named string and integer types with constants (common.LegendDisplayMode,
// "list" | "table" | "hidden"), and its decoders take any value of the underlying type. Go
// cannot list a type's constants at run time, so the enum sets are read from the SDK's own
// source in the module cache (the exact version go.sum pins), and the decoded dashboard is
// walked for values outside them: a typo such as "displayMode": "tabel" otherwise imports and
// renders with a silent fallback.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

const sdkModule = "github.com/grafana/grafana-foundation-sdk/go"

// enumSets maps "package path.TypeName" to the values of that type's constants, read lazily per
// SDK package as the walk meets its types.
type enumSets struct {
	dir    string // the SDK module's directory
	parsed map[string]bool
	values map[string]map[string]bool
}

func newEnumSets(dir string) (*enumSets, error) {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return nil, fmt.Errorf("SDK source for enum values: %w", err)
	}
	return &enumSets{dir: dir, parsed: map[string]bool{}, values: map[string]map[string]bool{}}, nil
}

func (s *enumSets) load(pkgPath string) error {
	if s.parsed[pkgPath] {
		return nil
	}
	s.parsed[pkgPath] = true
	dir := filepath.Join(s.dir, strings.TrimPrefix(strings.TrimPrefix(pkgPath, sdkModule), "/"))
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return err
	}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("SDK source %s: %w", file, err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				s.addConst(pkgPath, spec.(*ast.ValueSpec))
			}
		}
	}
	return nil
}

// addConst records `Name Type = literal`, the form of every enum constant the SDK generates.
func (s *enumSets) addConst(pkgPath string, spec *ast.ValueSpec) {
	typ, ok := spec.Type.(*ast.Ident)
	if !ok || len(spec.Values) != len(spec.Names) {
		return
	}
	for _, value := range spec.Values {
		lit, ok := value.(*ast.BasicLit)
		if !ok {
			continue
		}
		text := lit.Value
		if lit.Kind == token.STRING {
			unquoted, err := strconv.Unquote(text)
			if err != nil {
				continue
			}
			text = unquoted
		} else if lit.Kind != token.INT {
			continue
		}
		key := pkgPath + "." + typ.Name
		if s.values[key] == nil {
			s.values[key] = map[string]bool{}
		}
		s.values[key][text] = true
	}
}

// check walks a decoded value and returns "path: value is not one of [...]" for every enum-typed
// string or integer outside its type's constants. A zero value is left alone: it is what the
// lenient decoder leaves for a field the file does not set, and the strict pass reports a
// missing required field.
func (s *enumSets) check(path string, v reflect.Value) ([]string, error) {
	var problems []string
	var walk func(path string, v reflect.Value) error
	walk = func(path string, v reflect.Value) error {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				return walk(path, v.Elem())
			}
		case reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				field := t.Field(i)
				if !field.IsExported() {
					continue
				}
				name := strings.Split(field.Tag.Get("json"), ",")[0]
				if name == "-" {
					continue
				}
				next := path + "." + name
				if name == "" || ast.IsExported(name) {
					// A branch of a generated union (PanelOrRowPanel.Panel): not in the JSON.
					next = path
				}
				if err := walk(next, v.Field(i)); err != nil {
					return err
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i), v.Index(i)); err != nil {
					return err
				}
			}
		case reflect.Map:
			keys := v.MapKeys()
			sort.Slice(keys, func(i, j int) bool {
				return fmt.Sprint(keys[i].Interface()) < fmt.Sprint(keys[j].Interface())
			})
			for _, key := range keys {
				if err := walk(fmt.Sprintf("%s[%v]", path, key.Interface()), v.MapIndex(key)); err != nil {
					return err
				}
			}
		case reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			t := v.Type()
			if t.PkgPath() == "" || !strings.HasPrefix(t.PkgPath(), sdkModule) || v.IsZero() {
				return nil
			}
			if err := s.load(t.PkgPath()); err != nil {
				return err
			}
			allowed := s.values[t.PkgPath()+"."+t.Name()]
			var value string
			switch {
			case v.Kind() == reflect.String:
				value = v.String()
			case v.CanInt():
				value = strconv.FormatInt(v.Int(), 10)
			default:
				value = strconv.FormatUint(v.Uint(), 10)
			}
			if len(allowed) > 0 && !allowed[value] {
				names := make([]string, 0, len(allowed))
				for name := range allowed {
					names = append(names, strconv.Quote(name))
				}
				sort.Strings(names)
				problems = append(problems, fmt.Sprintf("%s: %q is not a %s (one of %s)",
					strings.TrimPrefix(path, "."), value, t.Name(), strings.Join(names, ", ")))
			}
		}
		return nil
	}
	err := walk(path, v)
	return problems, err
}
