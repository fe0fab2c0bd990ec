-- Content types for attachment file name extensions: the common ones, so
-- that a mail client opens a "report.pdf" with the right program. Anything
-- else is application/octet-stream; callers can always give content_type.
local M = {}

M.default = "application/octet-stream"

M.by_extension = {
  -- text
  txt = "text/plain", text = "text/plain", log = "text/plain", md = "text/markdown",
  csv = "text/csv", tsv = "text/tab-separated-values", html = "text/html", htm = "text/html",
  css = "text/css", ics = "text/calendar", vcf = "text/vcard", xml = "application/xml",
  rtf = "application/rtf",
  -- images
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", jpe = "image/jpeg",
  gif = "image/gif", bmp = "image/bmp", webp = "image/webp", svg = "image/svg+xml",
  ico = "image/vnd.microsoft.icon", tif = "image/tiff", tiff = "image/tiff",
  heic = "image/heic", avif = "image/avif",
  -- audio and video
  mp3 = "audio/mpeg", wav = "audio/wav", ogg = "audio/ogg", oga = "audio/ogg",
  flac = "audio/flac", m4a = "audio/mp4", aac = "audio/aac", opus = "audio/opus",
  mp4 = "video/mp4", m4v = "video/mp4", mov = "video/quicktime", webm = "video/webm",
  avi = "video/x-msvideo", mkv = "video/x-matroska", mpeg = "video/mpeg", mpg = "video/mpeg",
  -- documents
  pdf = "application/pdf", doc = "application/msword",
  docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xls = "application/vnd.ms-excel",
  xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  ppt = "application/vnd.ms-powerpoint",
  pptx = "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  odt = "application/vnd.oasis.opendocument.text",
  ods = "application/vnd.oasis.opendocument.spreadsheet",
  odp = "application/vnd.oasis.opendocument.presentation",
  epub = "application/epub+zip",
  -- data and code
  json = "application/json", js = "text/javascript", yaml = "application/yaml",
  yml = "application/yaml", sql = "application/sql", wasm = "application/wasm",
  -- archives
  zip = "application/zip", gz = "application/gzip", tgz = "application/gzip",
  bz2 = "application/x-bzip2", xz = "application/x-xz", zst = "application/zstd",
  ["7z"] = "application/x-7z-compressed", rar = "application/vnd.rar",
  tar = "application/x-tar",
  -- keys and signatures (no "eml" = message/rfc822 here: RFC 2046 5.2.1 allows
  -- that type only unencoded, and files always travel as base64)
  asc = "application/pgp-signature", p7s = "application/pkcs7-signature",
  pem = "application/x-pem-file",
  -- fonts
  ttf = "font/ttf", otf = "font/otf", woff = "font/woff", woff2 = "font/woff2",
}

-- The content type for a file name (case-insensitive on the extension).
function M.guess(filename)
  local ext = filename and filename:match("%.([^%./\\]+)$")
  return ext and M.by_extension[ext:lower()] or M.default
end

return M
