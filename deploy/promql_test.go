package deploy

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// This file reads the metric names out of PromQL expressions: enough of the
// language for the dashboard's and the rules' expressions, without taking
// in Prometheus's own parser (and its dependencies) for one test.

// selector is one vector selector of an expression: a metric name and its
// label matchers.
type selector struct {
	name     string
	matchers []matcher
}

// matcher is one label matcher, such as job=~"presence|presence-gc".
type matcher struct {
	label, op, value string
}

// matches reports whether a series whose label has value v is selected.
// Prometheus anchors regular expressions at both ends.
func (m matcher) matches(v string) (bool, error) {
	switch m.op {
	case "=":
		return v == m.value, nil
	case "!=":
		return v != m.value, nil
	}
	re, err := regexp.Compile("^(?:" + m.value + ")$")
	if err != nil {
		return false, fmt.Errorf("matcher %s%s%q: %w", m.label, m.op, m.value, err)
	}
	return re.MatchString(v) == (m.op == "=~"), nil
}

// lexeme is one lexical element of an expression; kind is 'i' for an
// identifier, 's' for a string (text unquoted) and 'p' for anything else
// (punctuation, operators, numbers, durations).
type lexeme struct {
	kind byte
	text string
}

func tokenize(expr string) ([]lexeme, error) {
	var toks []lexeme
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			// Kept unescaped: a matcher's value is compared, never quoted
			// again.
			j := i + 1
			var b strings.Builder
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' && j+1 < len(expr) {
					j++
				}
				b.WriteByte(expr[j])
			}
			if j == len(expr) {
				return nil, fmt.Errorf("unterminated string at %d in %q", i, expr)
			}
			toks = append(toks, lexeme{'s', b.String()})
			i = j + 1
		case isIdentStart(c):
			j := i + 1
			for j < len(expr) && (isIdentStart(expr[j]) || isDigit(expr[j])) {
				j++
			}
			toks = append(toks, lexeme{'i', expr[i:j]})
			i = j
		case isDigit(c) || c == '.':
			// Numbers and durations (0.99, 1e3, 5m) name no metric: one
			// token for the lot, so their letters are not read as names.
			j := i + 1
			for j < len(expr) && (isIdentStart(expr[j]) || isDigit(expr[j]) || expr[j] == '.') {
				j++
			}
			toks = append(toks, lexeme{'p', expr[i:j]})
			i = j
		case strings.ContainsRune("=!<>", rune(c)) && i+1 < len(expr) && strings.ContainsRune("=~", rune(expr[i+1])):
			// Two-character operators stay whole, so that "==" in a
			// matcher is refused rather than read as "=" and "=".
			toks = append(toks, lexeme{'p', expr[i : i+2]})
			i += 2
		case strings.ContainsRune("(){}[],=<>+-*/%^@", rune(c)):
			toks = append(toks, lexeme{'p', string(c)})
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d in %q", c, i, expr)
		}
	}
	return toks, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Identifiers that are never metric names: aggregations are followed by a
// grouping or "(", the binary operators and modifiers by operands.
var (
	aggregations = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
		"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio")
	keywords = set("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan")
	// groupings take a parenthesised list of label names.
	groupings = set("by", "without", "on", "ignoring", "group_left", "group_right")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// selectors returns every vector selector of expr. Besides PromQL it reads
// Grafana's label_values(selector, label), whose second argument is a label.
func selectors(expr string) ([]selector, error) {
	toks, err := tokenize(expr)
	if err != nil {
		return nil, err
	}
	// The walk skips what it does not need, so it would not notice an
	// unclosed bracket: check the nesting first.
	var open []string
	for _, t := range toks {
		if t.kind != 'p' {
			continue
		}
		switch t.text {
		case "(", "{", "[":
			open = append(open, t.text)
		case ")", "}", "]":
			want := map[string]string{")": "(", "}": "{", "]": "["}[t.text]
			if len(open) == 0 || open[len(open)-1] != want {
				return nil, fmt.Errorf("unbalanced %q in %q", t.text, expr)
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 {
		return nil, fmt.Errorf("unclosed %q in %q", open[len(open)-1], expr)
	}
	return walk(toks)
}

func walk(toks []lexeme) ([]selector, error) {
	var out []selector
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		next := func(text string) bool { return i+1 < len(toks) && toks[i+1].kind == 'p' && toks[i+1].text == text }
		switch {
		case t.kind == 'p' && t.text == "[":
			// A range or subquery: durations and steps only.
			end, err := closing(toks, i, "[", "]")
			if err != nil {
				return nil, err
			}
			i = end
		case t.kind == 'p' && t.text == "{":
			// A selector without a name before it, e.g. {__name__="up"}.
			end, ms, err := parseMatchers(toks, i)
			if err != nil {
				return nil, err
			}
			sel := selector{matchers: ms}
			for _, m := range ms {
				if m.label == "__name__" && m.op == "=" {
					sel.name = m.value
				}
			}
			if sel.name == "" {
				return nil, fmt.Errorf("selector without a metric name: %s", render(toks[i:end+1]))
			}
			out = append(out, sel)
			i = end
		case t.kind != 'i':
		case groupings[strings.ToLower(t.text)]:
			if next("(") {
				end, err := closing(toks, i+1, "(", ")")
				if err != nil {
					return nil, err
				}
				i = end
			}
		case aggregations[strings.ToLower(t.text)] || keywords[strings.ToLower(t.text)]:
		case t.text == "label_values" && next("("):
			end, err := closing(toks, i+1, "(", ")")
			if err != nil {
				return nil, err
			}
			// Only what comes before the last top-level comma is a
			// selector; label_values(label) has none.
			args := toks[i+2 : end]
			if c := lastTopLevelComma(args); c >= 0 {
				sels, err := walk(args[:c])
				if err != nil {
					return nil, err
				}
				out = append(out, sels...)
			}
			i = end
		case next("("):
			// A function; its arguments are walked as the loop goes on.
		default:
			// Outside groupings, an identifier that is no keyword and
			// calls nothing can only be a metric name.
			sel := selector{name: t.text}
			if next("{") {
				end, ms, err := parseMatchers(toks, i+1)
				if err != nil {
					return nil, err
				}
				sel.matchers = ms
				i = end
			}
			out = append(out, sel)
		}
	}
	return out, nil
}

// closing returns the index of the token that closes the one at open.
func closing(toks []lexeme, open int, l, r string) (int, error) {
	depth := 0
	for i := open; i < len(toks); i++ {
		if toks[i].kind != 'p' {
			continue
		}
		switch toks[i].text {
		case l:
			depth++
		case r:
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("%q without %q: %s", l, r, render(toks[open:]))
}

func lastTopLevelComma(toks []lexeme) int {
	depth, last := 0, -1
	for i, t := range toks {
		if t.kind != 'p' {
			continue
		}
		switch t.text {
		case "(", "{", "[":
			depth++
		case ")", "}", "]":
			depth--
		case ",":
			if depth == 0 {
				last = i
			}
		}
	}
	return last
}

// parseMatchers reads label="value" pairs from the "{" at open and returns
// the index of its "}".
func parseMatchers(toks []lexeme, open int) (int, []matcher, error) {
	var ms []matcher
	i := open + 1
	for i < len(toks) {
		if toks[i].kind == 'p' && toks[i].text == "}" {
			return i, ms, nil
		}
		if i+2 >= len(toks) || toks[i].kind != 'i' || toks[i+1].kind != 'p' || toks[i+2].kind != 's' {
			return 0, nil, fmt.Errorf("bad label matcher: %s", render(toks[open:]))
		}
		op := toks[i+1].text
		if op != "=" && op != "!=" && op != "=~" && op != "!~" {
			return 0, nil, fmt.Errorf("bad matcher operator %q: %s", op, render(toks[open:]))
		}
		ms = append(ms, matcher{label: toks[i].text, op: op, value: toks[i+2].text})
		i += 3
		if i < len(toks) && toks[i].kind == 'p' && toks[i].text == "," {
			i++
		}
	}
	return 0, nil, fmt.Errorf("{ without }: %s", render(toks[open:]))
}

func render(toks []lexeme) string {
	parts := make([]string, len(toks))
	for i, t := range toks {
		parts[i] = t.text
		if t.kind == 's' {
			parts[i] = fmt.Sprintf("%q", t.text)
		}
	}
	return strings.Join(parts, " ")
}

func TestSelectors(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []selector
	}{
		{"plain", `up{job="presence"} == 0`,
			[]selector{{"up", []matcher{{"job", "=", "presence"}}}}},
		{"aggregation with grouping first", `sum by (job, op) (rate(presence_redis_errors_total{job=~"a|b", op!="ping"}[5m])) > 5`,
			[]selector{{"presence_redis_errors_total", []matcher{{"job", "=~", "a|b"}, {"op", "!=", "ping"}}}}},
		{"grouping last", `sum(rate(x_total[5m])) without (instance)`,
			[]selector{{"x_total", nil}}},
		{"histogram quantile", `histogram_quantile(0.99, sum by (le) (rate(lag_seconds_bucket{job="g"}[10m]))) > 1e1`,
			[]selector{{"lag_seconds_bucket", []matcher{{"job", "=", "g"}}}}},
		{"vector matching", `a / on (instance) group_left (version) b{x='y'}`,
			[]selector{{"a", nil}, {"b", []matcher{{"x", "=", "y"}}}}},
		{"nested counts", `count(count by (version) (presence_build_info))`,
			[]selector{{"presence_build_info", nil}}},
		{"absent", `absent(polls_total{job=~"p|q"})`,
			[]selector{{"polls_total", []matcher{{"job", "=~", "p|q"}}}}},
		{"grafana label_values", `label_values(open{job=~"presence", a="b,c"}, instance)`,
			[]selector{{"open", []matcher{{"job", "=~", "presence"}, {"a", "=", "b,c"}}}}},
		{"grafana label_values of a label", `label_values(job)`, nil},
		{"name matcher", `{__name__="up"} and other offset 5m`,
			[]selector{{"up", []matcher{{"__name__", "=", "up"}}}, {"other", nil}}},
		{"subquery", `max_over_time(rate(x[1m])[10m:1m])`,
			[]selector{{"x", nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := selectors(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("selectors(%s) = %+v, want %+v", tt.expr, got, tt.want)
			}
		})
	}
	for _, bad := range []string{`x{job="a"`, `rate(x[5m]`, `x{job=a}`, `{job="a"}`, `x{job=="a"}`} {
		if got, err := selectors(bad); err == nil {
			t.Errorf("selectors(%s) = %+v, want an error", bad, got)
		}
	}
}
