//! PDF rendering with Typst as a library: the templates of `templates/` (compiled into the
//! binary, or read from a directory when one is configured), the bundle passed in as the
//! virtual file `/bundle.json`, the fonts embedded by `typst-assets` only (no system fonts, no
//! network, no packages). Compilation is CPU-bound: callers run it on a blocking thread.

use std::{collections::HashMap, path::PathBuf, sync::LazyLock};

use typst::{
    Library, LibraryExt, World,
    diag::{FileError, FileResult},
    foundations::{Bytes, Datetime},
    syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot},
    text::{Font, FontBook},
    utils::LazyHash,
};
use typst_layout::PagedDocument;

/// The templates shipped with the service: (file name, text).
const EMBEDDED: &[(&str, &str)] = &[
    ("common.typ", include_str!("../../templates/common.typ")),
    ("evidence.typ", include_str!("../../templates/evidence.typ")),
    ("soc2.typ", include_str!("../../templates/soc2.typ")),
    (
        "executive-debrief.typ",
        include_str!("../../templates/executive-debrief.typ"),
    ),
];

/// The virtual path the bundle is read from in templates: `json("/bundle.json")`.
pub const BUNDLE_PATH: &str = "/bundle.json";

struct Fonts {
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

static FONTS: LazyLock<Fonts> = LazyLock::new(|| {
    let fonts: Vec<Font> = typst_assets::fonts()
        .flat_map(|data| Font::iter(Bytes::new(data)))
        .collect();
    Fonts {
        book: LazyHash::new(FontBook::from_fonts(&fonts)),
        fonts,
    }
});

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

/// Where templates come from.
#[derive(Debug, Clone, Default)]
pub enum Templates {
    /// The ones compiled into the binary.
    #[default]
    Embedded,
    /// `*.typ` files of a directory (to customise the PDFs without rebuilding).
    Dir(PathBuf),
}

impl Templates {
    fn read(&self, name: &str) -> Result<String, String> {
        match self {
            Templates::Embedded => EMBEDDED
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, text)| text.to_string())
                .ok_or_else(|| format!("no template `{name}`")),
            Templates::Dir(dir) => std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("cannot read template {}: {e}", dir.join(name).display())),
        }
    }
}

/// Renders bundles to PDF.
#[derive(Debug, Clone, Default)]
pub struct Renderer {
    templates: Templates,
}

fn file_id(path: &str) -> Result<FileId, String> {
    let vpath = VirtualPath::new(path).map_err(|e| format!("bad virtual path {path}: {e:?}"))?;
    Ok(RootedPath::new(VirtualRoot::Project, vpath).intern())
}

struct RenderWorld {
    main: FileId,
    sources: HashMap<FileId, Source>,
    files: HashMap<FileId, Bytes>,
    today: Datetime,
}

impl World for RenderWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &FONTS.book
    }

    fn main(&self) -> FileId {
        self.main
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        self.sources
            .get(&id)
            .cloned()
            .ok_or_else(|| FileError::NotFound(PathBuf::from(format!("{id:?}"))))
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if let Some(bytes) = self.files.get(&id) {
            return Ok(bytes.clone());
        }
        self.sources
            .get(&id)
            .map(|source| Bytes::new(source.text().as_bytes().to_vec()))
            .ok_or_else(|| FileError::NotFound(PathBuf::from(format!("{id:?}"))))
    }

    fn font(&self, index: usize) -> Option<Font> {
        FONTS.fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<typst::foundations::Duration>) -> Option<Datetime> {
        Some(self.today)
    }
}

impl Renderer {
    pub fn new(templates: Templates) -> Self {
        Self { templates }
    }

    /// Render `template` (e.g. `soc2.typ`) over `bundle` into PDF bytes. Errors name the template
    /// problem (a Typst diagnostic, a missing file).
    pub fn render(
        &self,
        template: &str,
        bundle: &serde_json::Value,
        today: chrono::NaiveDate,
    ) -> Result<Vec<u8>, String> {
        use chrono::Datelike;
        let mut sources = HashMap::new();
        for (name, _) in EMBEDDED {
            let text = self.templates.read(name)?;
            let id = file_id(&format!("/{name}"))?;
            sources.insert(id, Source::new(id, text));
        }
        let main = file_id(&format!("/{template}"))?;
        if !sources.contains_key(&main) {
            return Err(format!("no template `{template}`"));
        }
        let data = serde_json::to_vec(bundle).map_err(|e| e.to_string())?;
        let files = HashMap::from([(file_id(BUNDLE_PATH)?, Bytes::new(data))]);
        let world = RenderWorld {
            main,
            sources,
            files,
            today: Datetime::from_ymd(today.year(), today.month() as u8, today.day() as u8)
                .ok_or("invalid date")?,
        };
        let document = typst::compile::<PagedDocument>(&world)
            .output
            .map_err(|errors| {
                let messages: Vec<String> = errors.iter().map(|e| e.message.to_string()).collect();
                format!("template {template}: {}", messages.join("; "))
            })?;
        typst_pdf::pdf(&document, &typst_pdf::PdfOptions::default()).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(|e| e.message.to_string()).collect();
            format!("PDF export: {}", messages.join("; "))
        })
    }
}
