//! A YAML tree that remembers where every node came from (line and column), so configuration
//! errors can point at the exact spot. serde stops at the first error and forgets locations of
//! valid-but-wrong values; this tree lets validation collect every problem in one pass.

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

impl Node {
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The text of a scalar key (keys are compared as text).
    pub fn key_text(&self) -> String {
        match &self.kind {
            NodeKind::Str(s) => s.clone(),
            NodeKind::Int(i) => i.to_string(),
            NodeKind::Float(f) => f.to_string(),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Null => "null".into(),
            _ => "<complex key>".into(),
        }
    }
    /// A one-word description of the node's type, for "expected X, found Y".
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "nothing",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "text",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
    /// The first `.nan` / `.inf` in the node, as written in YAML, if any: JSON cannot hold
    /// them, so values are range-checked here rather than silently becoming `null`.
    pub fn non_finite(&self) -> Option<(&'static str, Mark)> {
        match &self.kind {
            NodeKind::Float(f) if f.is_nan() => Some((".nan (not a number)", self.mark)),
            NodeKind::Float(f) if *f > 0.0 && f.is_infinite() => {
                Some((".inf (infinity)", self.mark))
            }
            NodeKind::Float(f) if f.is_infinite() => Some(("-.inf (minus infinity)", self.mark)),
            NodeKind::Seq(s) => s.iter().find_map(Node::non_finite),
            NodeKind::Map(m) => m.iter().find_map(|(_, v)| v.non_finite()),
            _ => None,
        }
    }
    /// The node as JSON (for hyperparameter values).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(s) => Value::Array(s.iter().map(Node::to_json).collect()),
            NodeKind::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.key_text(), v.to_json())).collect())
            }
        }
    }
}

/// A YAML syntax error with its location.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

fn mark(m: Marker) -> Mark {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Mark {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&yaml_rust2::parser::Tag>) -> NodeKind {
    if style != TScalarStyle::Plain || tag.is_some_and(|t| t.suffix == "str") {
        return NodeKind::Str(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => NodeKind::Null,
        "true" | "True" | "TRUE" => NodeKind::Bool(true),
        "false" | "False" | "FALSE" => NodeKind::Bool(false),
        t => {
            if let Ok(i) = t.parse::<i64>() {
                NodeKind::Int(i)
            } else if let Some(f) = parse_float(t) {
                NodeKind::Float(f)
            } else {
                NodeKind::Str(text)
            }
        }
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | "+.inf" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" => return Some(f64::NAN),
        _ => {}
    }
    // Reject Rust-only spellings such as "inf" or "nan" that YAML reads as text.
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    t.parse::<f64>().ok()
}

/// The most nodes a file may expand to, aliases included: a YAML "billion laughs" alias bomb
/// is refused instead of exhausting memory. Real Ianvs files hold a few hundred nodes.
pub const MAX_NODES: usize = 1_000_000;
/// The deepest nesting of mappings and lists accepted (Ianvs files nest about 6 deep).
pub const MAX_DEPTH: usize = 64;

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<Node>, usize)>,
    /// Anchor id → the node and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Nodes built so far, aliases counted at their expanded size.
    nodes: usize,
    /// Nodes built since each open collection started (to size anchors).
    starts: Vec<usize>,
    documents: usize,
    /// Line → columns added by [`indent_flow_continuations`], taken off again in marks.
    pads: HashMap<usize, usize>,
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { mark, message });
        }
    }
    fn push_value(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node)
                }
            }
            Some((parent, pending_key, _)) => match &mut parent.kind {
                NodeKind::Seq(items) => items.push(node),
                NodeKind::Map(entries) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(k) => entries.push((k, node)),
                },
                _ => unreachable!("only collections are pushed on the stack"),
            },
        }
    }
    fn count(&mut self, n: usize, at: Mark) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                at,
                format!(
                    "the file expands to more than {MAX_NODES} values (aliases counted at their expanded size): a YAML alias bomb, or far more than a configuration needs"
                ),
            );
            return false;
        }
        true
    }
    fn open(&mut self, kind: NodeKind, at: Mark, anchor: usize) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                at,
                format!("lists and mappings are nested more than {MAX_DEPTH} deep"),
            );
            return;
        }
        if !self.count(1, at) {
            return;
        }
        self.starts.push(self.nodes);
        self.stack.push((Node { kind, mark: at }, None, anchor));
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, m: Marker) {
        let at = unpad(mark(m), &self.pads);
        // After the first problem the rest of the events are only skipped (cheap), so a bomb
        // or a deep nest costs no more than reading the text.
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        at,
                        "a second YAML document (after `---`) in one file; ianvs reads one document per file".into(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, at) {
                    return;
                }
                let kind = scalar(text, style, tag.as_ref());
                self.push_value(Node { kind, mark: at }, anchor, 1)
            }
            Event::SequenceStart(anchor, _) => self.open(NodeKind::Seq(Vec::new()), at, anchor),
            Event::MappingStart(anchor, _) => self.open(NodeKind::Map(Vec::new()), at, anchor),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    let start = self.starts.pop().unwrap_or(self.nodes);
                    let size = self.nodes - start + 1;
                    self.push_value(node, anchor, size)
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, n)| *n) {
                Some(size) => {
                    if !self.count(size, at) {
                        return;
                    }
                    let mut n = self.anchors[&id].0.clone();
                    n.mark = at;
                    self.push_value(n, 0, size)
                }
                None => self.fail(at, "alias to an unknown anchor".into()),
            },
            _ => {}
        }
    }
}

/// Parses one YAML document, as PyYAML's safe loader reads Ianvs files: a UTF-8 byte-order
/// mark is skipped, a flow list whose closing `]` sits at its key's indentation is accepted,
/// a second document is refused, alias expansion and nesting are capped ([`MAX_NODES`],
/// [`MAX_DEPTH`]). An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match parse_with(text, HashMap::new()) {
        Ok(n) => Ok(n),
        // Only a text yaml-rust2 refuses is retried with its flow lines re-indented (so a
        // valid file is never rewritten); the retry's result is used only when it parses.
        Err((e, from_parser)) => match indent_flow_continuations(text) {
            Some((fixed, pads)) if from_parser => parse_with(&fixed, pads).map_err(|_| e),
            _ => Err(e),
        },
    }
}

/// Parses `text`; an error says whether the YAML parser (not the builder's caps) raised it.
fn parse_with(text: &str, pads: HashMap<usize, usize>) -> Result<Node, (SyntaxError, bool)> {
    let mut b = Builder {
        pads,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut b, true);
    // A problem found by the builder (a bomb, a second document) comes first: the parser may
    // have stumbled later on the same input.
    if let Some(e) = b.error.take() {
        return Err((e, false));
    }
    loaded.map_err(|e| {
        (
            SyntaxError {
                mark: unpad(mark(*e.marker()), &b.pads),
                message: e.info().to_string(),
            },
            true,
        )
    })?;
    Ok(b.root.unwrap_or(Node {
        kind: NodeKind::Null,
        mark: Mark { line: 1, col: 1 },
    }))
}

/// PyYAML accepts the lines of a flow collection (`[ ... ]`, `{ ... }`) at any indentation,
/// Ianvs's examples put the closing `]` at the key's indentation, and yaml-rust2 refuses that.
/// Inside a flow collection, indentation carries no meaning, so such lines are indented one
/// column past the line that opened the collection. Returns `None` when nothing changes (the
/// common case: columns in messages stay exact).
fn indent_flow_continuations(text: &str) -> Option<(String, HashMap<usize, usize>)> {
    let mut pads = HashMap::new();
    let mut depth = 0usize;
    let mut open_indent = 0usize;
    let mut quote: Option<char> = None;
    let mut out: Option<String> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if depth > 0 && quote.is_none() && indent <= open_indent && !line.trim().is_empty() {
            let o =
                out.get_or_insert_with(|| text.split_inclusive('\n').take(i).collect::<String>());
            o.push_str(&" ".repeat(open_indent + 1 - indent));
            o.push_str(line);
            pads.insert(i + 1, open_indent + 1 - indent);
        } else if let Some(o) = out.as_mut() {
            o.push_str(line);
        }
        if depth == 0 {
            open_indent = indent;
        }
        // Track flow depth outside quotes and comments.
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => {
                    let starts_value = depth > 0 || matches!(prev, ' ' | ':' | '-' | '\t');
                    match c {
                        '#' if prev == ' ' || prev == '\t' => break,
                        '"' | '\'' if starts_value && (depth > 0 || prev == ' ') => quote = Some(c),
                        '[' | '{' if starts_value => depth += 1,
                        ']' | '}' if depth > 0 => depth -= 1,
                        _ => {}
                    }
                }
            }
            if !c.is_whitespace() || prev != ' ' {
                prev = c;
            }
            if c == ' ' {
                prev = ' ';
            }
        }
    }
    out.map(|o| (o, pads))
}

/// A mark in the original text (columns added by the flow fix taken off).
fn unpad(m: Mark, pads: &HashMap<usize, usize>) -> Mark {
    match pads.get(&m.line) {
        Some(p) => Mark {
            line: m.line,
            col: m.col.saturating_sub(*p).max(1),
        },
        None => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_types() {
        let n = parse("a:\n  b: 1\n  c: [x, 2.5, \"3\", true, ~]\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].0.key_text(), "a");
        let inner = m[0].1.as_map().unwrap();
        assert_eq!(inner[0].1.kind, NodeKind::Int(1));
        assert_eq!(inner[0].1.mark, Mark { line: 2, col: 6 });
        let seq = inner[1].1.as_seq().unwrap();
        assert_eq!(seq[0].kind, NodeKind::Str("x".into()));
        assert_eq!(seq[1].kind, NodeKind::Float(2.5));
        assert_eq!(seq[2].kind, NodeKind::Str("3".into()));
        assert_eq!(seq[3].kind, NodeKind::Bool(true));
        assert_eq!(seq[4].kind, NodeKind::Null);
    }

    #[test]
    fn syntax_errors_have_locations() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.mark.line >= 1 && !e.message.is_empty());
    }

    #[test]
    fn pyyaml_dialect() {
        // A closing bracket at the key's indentation (KubeEdge-Ianvs's PIPL example).
        let n = parse("a:\n  m: [\n    \"x\", \"y\"\n  ]\n  k: 1\n").unwrap();
        let inner = n.as_map().unwrap()[0].1.as_map().unwrap();
        assert_eq!(inner[0].1.to_json(), serde_json::json!(["x", "y"]));
        assert_eq!(inner[1].1.mark, Mark { line: 5, col: 6 });
        let e = parse("a:\n  m: [\"x\"\n  k: 1\n").unwrap_err();
        assert!(e.mark.col <= 4, "{:?}", e.mark);
        // A byte-order mark is not part of the first key.
        let n = parse("\u{feff}# c\nkey: 1\n").unwrap();
        assert_eq!(n.as_map().unwrap()[0].0.key_text(), "key");
        // `.nan` and `.inf` are numbers.
        let n = parse("a: .nan\nb: -.inf\n").unwrap();
        assert!(matches!(n.as_map().unwrap()[0].1.kind, NodeKind::Float(f) if f.is_nan()));
        assert!(
            matches!(n.as_map().unwrap()[1].1.kind, NodeKind::Float(f) if f == f64::NEG_INFINITY)
        );
        // A valid file is never rewritten: an unbalanced `[` in a block scalar stays text.
        let n = parse("a: |\n  see [the docs\nb: 1\n").unwrap();
        assert_eq!(n.as_map().unwrap()[1].0.key_text(), "b");
        // Brackets inside quotes and comments do not open a flow collection.
        assert!(indent_flow_continuations("a: \"[x\"\nb: 1 # [\nc: 2\n").is_none());
    }

    #[test]
    fn hostile_documents_are_refused() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{}", e.message);
        assert_eq!(e.mark.line, 2);
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            bomb.push_str(&format!(
                "{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{}", e.message);
        let deep = format!("a: {}1{}\n", "[".repeat(200), "]".repeat(200));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested more than"), "{}", e.message);
    }

    #[test]
    fn anchors_resolve() {
        let n = parse("x: &v [1, 2]\ny: *v\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].1.to_json(), m[1].1.to_json());
    }
}
