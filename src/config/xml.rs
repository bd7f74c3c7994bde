//! James XML configuration files read into a small element tree that remembers where each
//! element, attribute and text came from. `${env:…}` is interpolated in attribute values
//! and text, with errors at the variable's own position.

use std::path::Path;
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::error::{ConfigError, Position};
use super::interpolate::interpolate;

/// An XML attribute, interpolated.
#[derive(Clone, Debug)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Interpolated value.
    pub value: String,
    /// Where the attribute is.
    pub position: Position,
}

/// An XML element with its attributes, text and children.
#[derive(Clone, Debug)]
pub struct Element {
    /// Element name (no namespace handling: James files have none).
    pub name: String,
    /// Attributes in document order.
    pub attributes: Vec<Attribute>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Concatenated, interpolated text content (trimmed).
    pub text: String,
    /// Where the start tag is.
    pub position: Position,
}

impl Element {
    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// An attribute with its position.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// An error at this element.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.position.error(message)
    }
}

/// A parsed XML file.
#[derive(Clone, Debug)]
pub struct XmlDocument {
    /// The root element.
    pub root: Element,
}

impl XmlDocument {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<XmlDocument, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Position::file_start(path).error(format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parses XML text; `path` is used in error positions.
    pub fn parse(text: &str, path: &Path) -> Result<XmlDocument, ConfigError> {
        // quick-xml skips a byte-order mark without counting it in its positions, so the
        // offsets would point 3 bytes early into `text` (fuzzing found a panic there)
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file = Arc::new(path.to_path_buf());
        let lines = LineIndex::new(text);
        let at = |offset: u64| {
            let (line, column) = lines.locate(text, offset as usize);
            Position::new(&file, line, column)
        };
        let mut tree = TreeBuilder::default();
        tree.feed(text, &at, 0)?;
        let (stack, root) = (tree.stack, tree.root);
        if let Some(open) = stack.last() {
            return Err(open.error(format!("element <{}> is never closed", open.name)));
        }
        root.map(|root| XmlDocument { root }).ok_or_else(|| {
            Position::new(&file, 1, 1).error("empty XML document: expected a root element")
        })
    }
}

/// How deep entities may refer to entities, and how much text they may expand to in all:
/// enough for any configuration, too little for a "billion laughs".
const MAX_ENTITY_DEPTH: usize = 8;
const MAX_ENTITY_EXPANSION: usize = 1 << 20;

/// Builds the element tree from events; internal DTD entities (`<!ENTITY x "…">` in the
/// `<!DOCTYPE>`, then `&x;`) are expanded as an XML parser does, markup included. quick-xml
/// reports the DOCTYPE and each `&x;` but does not read entity declarations: that is here.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Element>,
    root: Option<Element>,
    entities: std::collections::HashMap<String, String>,
    expanded: usize,
}

impl TreeBuilder {
    /// Reads `text` (the document, or an entity's replacement text at `depth` > 0).
    fn feed(
        &mut self,
        text: &str,
        at: &dyn Fn(u64) -> Position,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut reader = Reader::from_str(text);
        // an entity's text may close what the document opened, and the reverse
        reader.config_mut().check_end_names = depth == 0;
        loop {
            let offset = reader.buffer_position();
            let event = reader
                .read_event()
                .map_err(|e| at(reader.error_position()).error(format!("malformed XML: {e}")))?;
            match event {
                Event::DocType(doctype) if depth == 0 => {
                    let dtd = doctype.as_ref().to_string();
                    self.entities = entity_declarations(&dtd).map_err(|e| at(offset).error(e))?;
                }
                Event::Start(start) => {
                    let el = self.element(&start, text, offset as usize, at)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    let el = self.element(&start, text, offset as usize, at)?;
                    attach(&mut self.stack, &mut self.root, el, &at(offset))?;
                }
                Event::End(end) => {
                    let Some(mut el) = self.stack.pop() else {
                        return Err(
                            at(offset).error(format!("</{}> closes nothing", end.name().as_ref()))
                        );
                    };
                    el.text = el.text.trim().to_string();
                    attach(&mut self.stack, &mut self.root, el, &at(offset))?;
                }
                Event::Text(t) => {
                    if let Some(parent) = self.stack.last_mut() {
                        let raw = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                        let decoded = quick_xml::escape::unescape(&raw)
                            .map_err(|e| at(offset).error(format!("bad entity: {e}")))?;
                        let skipped = raw.len() - raw.trim_start().len();
                        let value = interpolate(&decoded, &at(offset + skipped as u64))?;
                        parent.text.push_str(&value);
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.to_string();
                    if let Some(replacement) = self.entities.get(&name).cloned() {
                        self.expand(&name, &replacement, &at(offset), depth)?;
                    } else if let Some(parent) = self.stack.last_mut() {
                        parent.text.push_str(&character_or_predefined(&name).ok_or_else(
                            || at(offset).error(format!("unknown entity &{name};: declare it with <!ENTITY {name} \"…\"> in the <!DOCTYPE>")),
                        )?);
                    }
                }
                Event::CData(c) => {
                    if let Some(parent) = self.stack.last_mut() {
                        parent.text.push_str(&c);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the replacement text of `&name;`; everything in it is placed at the reference.
    fn expand(
        &mut self,
        name: &str,
        replacement: &str,
        reference: &Position,
        depth: usize,
    ) -> Result<(), ConfigError> {
        self.expanded += replacement.len();
        if depth >= MAX_ENTITY_DEPTH || self.expanded > MAX_ENTITY_EXPANSION {
            return Err(reference.error(format!(
                "entity &{name}; expands too deep or too large (entities referring to themselves?)"
            )));
        }
        let here = reference.clone();
        self.feed(replacement, &move |_| here.clone(), depth + 1)
    }

    fn element(
        &self,
        start: &BytesStart,
        text: &str,
        offset: usize,
        at: &dyn Fn(u64) -> Position,
    ) -> Result<Element, ConfigError> {
        element(start, text, offset, at, &|raw| {
            self.expand_in_attribute(raw)
        })
    }

    /// An attribute value with the declared entities replaced (recursively), then the
    /// predefined and character references.
    fn expand_in_attribute(&self, raw: &str) -> Result<String, String> {
        let mut value = raw.to_string();
        for _ in 0..MAX_ENTITY_DEPTH {
            let mut changed = false;
            for (name, replacement) in &self.entities {
                let reference = format!("&{name};");
                if value.contains(&reference) {
                    value = value.replace(&reference, replacement);
                    changed = true;
                }
            }
            if value.len() > MAX_ENTITY_EXPANSION {
                break;
            }
            if !changed {
                return quick_xml::escape::unescape(&value)
                    .map(|v| v.into_owned())
                    .map_err(|e| e.to_string());
            }
        }
        Err("entities expand too deep or too large (entities referring to themselves?)".into())
    }
}

fn character_or_predefined(name: &str) -> Option<String> {
    if let Some(hex) = name.strip_prefix("#x") {
        return u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .map(String::from);
    }
    if let Some(dec) = name.strip_prefix('#') {
        return dec
            .parse::<u32>()
            .ok()
            .and_then(char::from_u32)
            .map(String::from);
    }
    quick_xml::escape::resolve_predefined_entity(name).map(String::from)
}

/// The internal general entities `<!ENTITY name "value">` of a DOCTYPE's content.
/// Parameter entities (`<!ENTITY % …>`) are skipped; an external one (`SYSTEM`/`PUBLIC`)
/// is an error: mailetd reads no file the configuration does not name itself.
fn entity_declarations(dtd: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut entities = std::collections::HashMap::new();
    let mut rest = dtd;
    while let Some(i) = rest.find("<!ENTITY") {
        rest = rest[i + "<!ENTITY".len()..].trim_start();
        if rest.starts_with('%') {
            continue;
        }
        let name_end = rest
            .find(|c: char| c.is_whitespace())
            .ok_or("<!ENTITY without a value")?;
        let name = rest[..name_end].to_string();
        rest = rest[name_end..].trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return Err(format!(
                "<!ENTITY {name} …>: external entities (SYSTEM, PUBLIC) are not read; write the value in quotes"
            ));
        };
        let end = rest[1..]
            .find(quote)
            .ok_or_else(|| format!("<!ENTITY {name}: the value's quote is never closed"))?;
        // the first declaration of a name wins (XML 1.0, 4.2)
        entities
            .entry(name)
            .or_insert_with(|| rest[1..1 + end].to_string());
        rest = &rest[1 + end + 1..];
    }
    Ok(entities)
}

fn element(
    start: &BytesStart,
    text: &str,
    offset: usize,
    at: &dyn Fn(u64) -> Position,
    unescape: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Element, ConfigError> {
    let position = at(offset as u64);
    let name = start.name().as_ref().to_string();
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| position.error(format!("bad attribute in <{name}>: {e}")))?;
        let attr_name = attr.key.as_ref().to_string();
        let raw = attr.value.to_string();
        let unescaped = unescape(&raw)
            .map_err(|e| position.error(format!("bad entity in attribute {attr_name}: {e}")))?;
        let attr_position = find_in_tag(text, offset, &attr_name)
            .map(|o| at(o as u64))
            .unwrap_or(position.clone());
        let value_position = Position {
            column: attr_position.column + attr_name.chars().count() as u32 + 2,
            ..attr_position.clone()
        };
        let value = interpolate(&unescaped, &value_position)?;
        attributes.push(Attribute {
            name: attr_name,
            value,
            position: attr_position,
        });
    }
    Ok(Element {
        name,
        attributes,
        children: Vec::new(),
        text: String::new(),
        position,
    })
}

fn find_in_tag(text: &str, tag_start: usize, attr: &str) -> Option<usize> {
    // `get`: an offset that is not on a char boundary means "not found", never a panic
    let tag_end = text.get(tag_start..)?.find('>')? + tag_start;
    let tag = &text[tag_start..tag_end];
    let mut search = 0;
    while let Some(i) = tag[search..].find(attr) {
        let i = search + i;
        let before_ok = tag[..i].ends_with(char::is_whitespace);
        let after_ok = tag[i + attr.len()..].trim_start().starts_with('=');
        if before_ok && after_ok {
            return Some(tag_start + i);
        }
        search = i + attr.len();
    }
    None
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    el: Element,
    position: &Position,
) -> Result<(), ConfigError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err(position.error("a second root element: an XML file has exactly one")),
    }
    Ok(())
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn locate(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line as u32 + 1, column as u32 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing finding (xml_config): a byte-order mark made attribute offsets land inside it
    /// and `find_in_tag` sliced a str off a char boundary.
    #[test]
    fn byte_order_mark_is_skipped_and_positions_stay_right() {
        let doc =
            XmlDocument::parse("\u{feff}<a>\n  <b x=\"1\"/></a>", Path::new("c.xml")).unwrap();
        let b = doc.root.child("b").unwrap();
        let x = b.attribute("x").unwrap();
        assert_eq!(x.value, "1");
        assert_eq!((x.position.line, x.position.column), (2, 6));
        let err = XmlDocument::parse(
            "\u{feff}D <<?xml version=\"1.0\"?>\n<a e=\"1\"/>",
            Path::new("c.xml"),
        );
        assert!(err.is_err());
        assert_eq!(find_in_tag("\u{feff}<a x=\"1\">", 2, "x"), None);
    }

    #[test]
    fn tree_with_positions_and_interpolation() {
        let xml = "<?xml version=\"1.0\"?>\n<a x=\"${env:MAILETD_TEST_UNSET_Z:-1}\">\n  <b>hello &amp; bye</b>\n  <c/>\n</a>\n";
        let doc = XmlDocument::parse(xml, Path::new("t.xml")).unwrap();
        assert_eq!(doc.root.attr("x"), Some("1"));
        let b = doc.root.child("b").unwrap();
        assert_eq!(b.text, "hello & bye");
        assert_eq!((b.position.line, b.position.column), (3, 3));
        assert_eq!(doc.root.child("c").unwrap().position.line, 4);
    }

    #[test]
    fn unset_variable_in_attribute_points_at_it() {
        let xml = "<a>\n  <b enabled=\"${env:MAILETD_TEST_UNSET_W}\"/>\n</a>";
        let err = XmlDocument::parse(xml, Path::new("conf/smtpserver.xml")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "conf/smtpserver.xml:2:15: environment variable MAILETD_TEST_UNSET_W is not set"
            ),
            "{err}"
        );
    }

    #[test]
    fn internal_dtd_entities_are_expanded_in_text_attributes_and_markup() {
        let xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE a [\n  <!ENTITY dav \"http://dav.example:8080\">\n  <!ENTITY full \"&dav;/api\">\n  <!ENTITY strip '<m class=\"RemoveMimeHeader\"><name>bcc</name></m>'>\n  <!ENTITY % param \"ignored\">\n]>\n<a uri=\"&full;\">\n  <b>&dav; &amp; &#65;</b>\n  &strip;\n  <c/>\n</a>";
        let doc = XmlDocument::parse(xml, Path::new("e.xml")).unwrap();
        assert_eq!(doc.root.attr("uri"), Some("http://dav.example:8080/api"));
        assert_eq!(
            doc.root.child_text("b"),
            Some("http://dav.example:8080 & A")
        );
        let m = doc.root.child("m").expect("the entity's element");
        assert_eq!(m.attr("class"), Some("RemoveMimeHeader"));
        assert_eq!(m.child_text("name"), Some("bcc"));
        assert_eq!(m.position.line, 10, "placed at the reference");
        let names: Vec<&str> = doc.root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "m", "c"]);

        let err = XmlDocument::parse("<a>\n&nope;</a>", Path::new("e.xml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("e.xml:2:1: unknown entity &nope;"),
            "{err}"
        );
        let laughs = "<!DOCTYPE a [<!ENTITY l \"&l;&l;\">]><a>&l;</a>";
        let err = XmlDocument::parse(laughs, Path::new("e.xml")).unwrap_err();
        assert!(err.to_string().contains("too deep or too large"), "{err}");
        let external = "<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>";
        let err = XmlDocument::parse(external, Path::new("e.xml")).unwrap_err();
        assert!(err.to_string().contains("external entities"), "{err}");
    }

    #[test]
    fn malformed_xml_is_located() {
        let err = XmlDocument::parse("<a>\n<b></c>\n</a>", Path::new("m.xml")).unwrap_err();
        assert!(err.to_string().starts_with("m.xml:2:"), "{err}");
    }
}
