//! A YAML tree that remembers where every node came from (line and column), so configuration
//! errors can point at the exact spot. serde stops at the first error and forgets locations of
//! valid-but-wrong values; this tree lets validation collect every problem in one pass.

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<Node>, usize)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
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
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, m: Marker) {
        let at = mark(m);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let kind = scalar(text, style, tag.as_ref());
                self.push_value(Node { kind, mark: at }, anchor)
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    kind: NodeKind::Seq(Vec::new()),
                    mark: at,
                },
                None,
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    kind: NodeKind::Map(Vec::new()),
                    mark: at,
                },
                None,
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.push_value(node, anchor)
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut n) => {
                    n.mark = at;
                    self.push_value(n, 0)
                }
                None => {
                    self.error = Some(SyntaxError {
                        mark: at,
                        message: "alias to an unknown anchor".into(),
                    })
                }
            },
            _ => {}
        }
    }
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| SyntaxError {
        mark: mark(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root.unwrap_or(Node {
        kind: NodeKind::Null,
        mark: Mark { line: 1, col: 1 },
    }))
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
    fn anchors_resolve() {
        let n = parse("x: &v [1, 2]\ny: *v\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].1.to_json(), m[1].1.to_json());
    }
}
