import Foundation

/// What the report pages share: escaping, the page around a body, and writing a page.
enum HTML {
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// A self-contained page: inline CSS, nothing fetched.
    static func page(title: String, css: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · onnx-dpo</title>
        <style>\(css)</style></head><body>
        \(body)
        </body></html>
        """
    }

    /// Writes `page` to `path` by a temporary file renamed into place, so a browser never reads half a page.
    static func write(_ page: String, to path: String) throws {
        do {
            try Data(page.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw RunReportError.cannotWrite(path: path, reason: error.localizedDescription)
        }
    }
}
