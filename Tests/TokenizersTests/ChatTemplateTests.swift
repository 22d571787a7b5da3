import Foundation
import TestSupport
import XCTest

@testable import Tokenizers

/// The chat-template engine against transformers' own rendering of TRL's bundled templates
/// (fixtures/chat_templates/, made by tools/make_chat_template_references.py), byte for byte.
final class ChatTemplateReferenceTests: XCTestCase {
    func testEveryTemplateRendersAsTransformersDoes() throws {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: fixturePath("chat_templates/expected.json")))
        let reference = try parseJSON([UInt8](data))
        guard case .array(let cases)? = reference["cases"], case .object? = reference["conversations"] else {
            return XCTFail("expected.json has no cases")
        }
        var templates: [String: ChatTemplate] = [:]
        var passed = 0
        var failures: [String] = []
        for referenceCase in cases {
            guard case .string(let name)? = referenceCase["template"],
                  case .string(let conversationName)? = referenceCase["conversation"],
                  case .bool(let addGenerationPrompt)? = referenceCase["add_generation_prompt"],
                  let conversation = reference["conversations"]?[conversationName],
                  case .array(let messages)? = conversation["messages"] else {
                return XCTFail("malformed case in expected.json")
            }
            let label = "\(name) / \(conversationName) / add_generation_prompt=\(addGenerationPrompt)"
            if templates[name] == nil {
                let source = try String(contentsOfFile: fixturePath("chat_templates/\(name).jinja"), encoding: .utf8)
                do {
                    templates[name] = try ChatTemplate(source: source)
                } catch {
                    failures.append("\(label): the template does not parse: \(error)")
                    continue
                }
            }
            guard let template = templates[name] else { continue }
            var context: [String: JSONValue] = [:]
            for object in [reference["context"], referenceCase["special_tokens"], conversation["context"]] {
                if case .object(let entries)? = object { for (key, value) in entries { context[key] = value } }
            }
            let result = Result { () throws(ChatTemplateError) -> String in
                try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                    tools: conversation["tools"], context: context)
            }
            switch (result, referenceCase["rendered"], referenceCase["error"]) {
            case (.success(let text), .string(let expected)?, _):
                if text.unicodeScalars.elementsEqual(expected.unicodeScalars) {
                    passed += 1
                } else {
                    failures.append("\(label): \(firstDifference(text, expected))")
                }
            case (.failure, _, .string?):
                passed += 1
            case (.failure(let error), _, _):
                failures.append("\(label): failed where transformers renders: \(error)")
            case (.success(let text), _, let error):
                failures.append("\(label): rendered \(pythonStringRepr(String(text.prefix(200)))) where transformers "
                    + "fails with \(error.map { "\($0)" } ?? "?")")
            }
        }
        for failure in failures.prefix(25) { XCTFail(failure) }
        print("chat templates: \(passed) of \(cases.count) cases as transformers renders them, over "
            + "\(templates.count) templates")
        XCTAssertEqual(passed, cases.count)
    }

    /// Where two renderings part, with 60 characters of each around it, escaped.
    private func firstDifference(_ actual: String, _ expected: String) -> String {
        let a = Array(actual.unicodeScalars)
        let b = Array(expected.unicodeScalars)
        let index = zip(a, b).prefix { $0 == $1 }.count
        func excerpt(_ scalars: [Unicode.Scalar]) -> String {
            pythonStringRepr(String(scalars: scalars[max(0, index - 30)..<min(scalars.count, index + 30)]))
        }
        return "differs at character \(index) (lengths \(a.count) and \(b.count)):\n    ours:         "
            + "\(excerpt(a))\n    transformers: \(excerpt(b))"
    }
}

/// The engine's constructs, one at a time, with jinja2's output (checked by hand against jinja2 3.1 with
/// transformers' environment) and its errors.
final class ChatTemplateEngineTests: XCTestCase {
    private func render(_ source: String, _ variables: [String: TemplateValue] = [:],
                        file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            return try ChatTemplate(source: source).render(variables: variables)
        } catch {
            XCTFail("\(error)", file: file, line: line)
            return nil
        }
    }

    private func assertRenders(_ source: String, _ expected: String, _ variables: [String: TemplateValue] = [:],
                               file: StaticString = #filePath, line: UInt = #line) {
        guard let text = render(source, variables, file: file, line: line) else { return }
        XCTAssertEqual(pythonStringRepr(text), pythonStringRepr(expected), source, file: file, line: line)
    }

    private func assertFails(_ source: String, _ variables: [String: TemplateValue] = [:], line errorLine: Int,
                             column: Int, mentioning fragment: String, file: StaticString = #filePath,
                             line: UInt = #line) {
        do {
            let text = try ChatTemplate(source: source).render(variables: variables)
            XCTFail("rendered \(pythonStringRepr(text)) instead of failing", file: file, line: line)
        } catch {
            XCTAssertEqual(error.location, SourceLocation(line: errorLine, column: column), "\(error)",
                           file: file, line: line)
            XCTAssertTrue("\(error)".contains(fragment), "\(error) does not mention \(fragment)", file: file, line: line)
            XCTAssertTrue("\(error)".contains("line \(errorLine), column \(column)"), "\(error)", file: file, line: line)
        }
    }

    func testWhitespaceControlAsTransformersConfiguresJinja() {
        assertRenders("a\n  {# c #}\nb", "a\nb")
        assertRenders("a {# c #}\nb", "a b")
        assertRenders("  {% if 1 %}\nx{% endif %}\ny\n", "xy")
        assertRenders("x  {{ 1 }}  \n  {% if 1 +%}\nz{% endif %}", "x  1  \n\nz")
        assertRenders("a\n  {%+ if 1 %}b{% endif %}", "a\n  b")
        assertRenders("a  {{- 'b' -}}  \n c", "abc")
        assertRenders("{% for i in [1, 2] -%}\n   {{ i }}\n{%- endfor %}", "12")
        assertRenders("line\r\nnext\r\n", "line\nnext")
    }

    func testExpressionsAndPrecedence() {
        assertRenders("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }}",
                      "7 9 64 3 -4 1")
        assertRenders("{{ 1 / 2 }} {{ 4 / 2 }} {{ 1.5 + 1 }} {{ 'a' ~ 1 ~ none ~ true }}", "0.5 2.0 2.5 a1NoneTrue")
        assertRenders("{{ 'ab' * 2 }} {{ [1] + [2] }} {{ 'x' if false }}|{{ 'y' if 0 else 'z' }}", "abab [1, 2] |z")
        assertRenders("{{ not 1 == 2 }} {{ 1 < 2 < 3 }} {{ 'b' in 'abc' }} {{ 3 not in [1, 2] }}", "True True True True")
        assertRenders("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ [] or none }}", "x y None")
        assertRenders("{{ -x|abs }}", "3", ["x": .int(3)])
        assertRenders("{{ 'a' + 'b' | upper }}", "aB")
        assertRenders("{{ {'k': [1, 'two', none, 1.0]} }} {{ \"it's\" }}", "{'k': [1, 'two', None, 1.0]} it's")
        assertRenders("{{ 'a\\'b\\n\\u00e9\\x41\\d' }}", "a'b\néA\\d")
    }

    func testVariablesUndefinedAndAttributes() {
        let message = TemplateValue.dictionary(TemplateDictionary([("role", .string("user")), ("content", .string("hi"))]))
        assertRenders("{{ m.role }} {{ m['content'] }} {{ m.missing }}|{{ m.get('x', 'd') }} {{ m.get('role') }}",
                      "user hi |d user", ["m": message])
        assertRenders("{{ u }}|{{ u is defined }} {{ u is undefined }} {{ u|length }} {{ u|default('x') }}",
                      "|False True 0 x")
        assertRenders("{{ none.x is defined }} {{ [1][5] is defined }} {{ 'tools' in m }} {{ 'role' in m }}",
                      "False False False True", ["m": message])
        assertRenders("{% for k, v in m|items %}{{ k }}={{ v }};{% endfor %}{{ m.keys()|list }}",
                      "role=user;content=hi;['role', 'content']", ["m": message])
        assertFails("{{ u.x }}", line: 1, column: 5, mentioning: "'u' is undefined")
        assertFails("a\n{{ u + 1 }}", line: 2, column: 6, mentioning: "'u' is undefined")
    }

    func testLoopsAndLoopVariables() {
        assertRenders(
            "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
                + "{{ loop.length }}{{ loop.previtem|default('-') }} {% endfor %}",
            "103TrueFalse3- 212FalseFalse3a 321FalseTrue3b ")
        assertRenders("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}",
                      "2242")
        assertRenders("{% for x in [] %}x{% else %}empty{% endfor %}", "empty")
        assertRenders("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{% if x is odd %}{% continue %}"
            + "{% endif %}{{ x }}{% endfor %}", "02")
        assertRenders("{% for x in [1, 2] %}{% set y = x %}{% endfor %}{{ y is defined }}", "False")
        assertRenders("{% set ns = namespace(total=0) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}"
            + "{% endfor %}{{ ns.total }}", "6")
        assertRenders("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}", "aba")
        assertRenders("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}", "3,7,")
    }

    func testSetMacroCallAndFilterBlocks() {
        assertRenders("{% set x %}  a {% endset %}[{{ x }}]", "[  a ]")
        assertRenders("{% set a, b = 1, 2 %}{{ a }}{{ b }}", "12")
        assertRenders("{% macro greet(name, punctuation='!') %}Hi {{ name }}{{ punctuation }}{% endmacro %}"
            + "{{ greet('Ann') }} {{ greet('Bo', punctuation='?') }}", "Hi Ann! Hi Bo?")
        assertRenders("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inside{% endcall %}", "[inside]")
        assertRenders("{% filter upper %}shout {{ 'this' }}{% endfilter %}", "SHOUT THIS")
        assertRenders("{% generation %}kept{% endgeneration %}", "kept")
        assertRenders("{% with a = 1, b = a %}{{ a }}{% endwith %}{{ a is defined }}", "1False")
        assertRenders("a\n  {% raw -%}\n  {{ y }}  {%- endraw %}\nb", "a\n{{ y }}b")
    }

    func testFiltersTestsAndMethods() {
        let items = TemplateValue.list([
            .dictionary(TemplateDictionary([("name", .string("b")), ("on", .bool(true))])),
            .dictionary(TemplateDictionary([("name", .string("a")), ("on", .bool(false))])),
        ])
        assertRenders("{{ items|selectattr('on')|map(attribute='name')|join(',') }} "
            + "{{ items|rejectattr('on')|map(attribute='name')|first }} {{ items|map(attribute='name')|sort|list }}",
            "b a ['a', 'b']", ["items": items])
        assertRenders("{{ items|selectattr('name', 'equalto', 'a')|list|length }} {{ [1, 2, 3]|reject('odd')|list }}",
                      "1 [2]", ["items": items])
        assertRenders("{{ '  x  '|trim }}|{{ 'ab'|upper }} {{ 'hello world'|title }} {{ 'hELLO'|capitalize }} "
            + "{{ 'a-b'|replace('-', '+') }} {{ '3'|int + 1 }} {{ '2.5'|float }} {{ 1|string ~ 'x' }}",
            "x|AB Hello World Hello a+b 4 2.5 1x")
        assertRenders("{{ {'b': 1, 'a': [1, 'é', none, true, 1.5]}|tojson }} {{ {'a': {'b': []}}|tojson(indent=2) }}",
                      "{\"b\": 1, \"a\": [1, \"é\", null, true, 1.5]} {\n  \"a\": {\n    \"b\": []\n  }\n}")
        assertRenders("{{ 'a\nb\n'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}", "a\n  b\n|  a\n  b")
        assertRenders("{{ {'b': 1, 'a': 2}|dictsort }} {{ [3, 1, 2]|max }} {{ [1, 1, 2]|unique|list }}",
                      "[['a', 2], ['b', 1]] 3 [1, 2]")
        assertRenders("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'xxhixx'.strip('x') }} "
            + "{{ 'Hi'.startswith(('x', 'H')) }} {{ 'abc'.endswith('bc') }} {{ 'a b'.replace(' ', '_') }}",
            "['a', 'b', '', 'c'] ['a', 'b'] hi True True a_b")
        assertRenders("{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1, 2, 3, 4][-2:] }} {{ [1, 2, 3][::2] }} "
            + "{{ 'héllo'[1] }}", "el olleh [3, 4] [1, 3] é")
        assertRenders("{{ 1 is number }} {{ true is number }} {{ 'x' is string }} {{ {} is mapping }} "
            + "{{ [] is iterable }} {{ 'x' is sequence }} {{ 3 is integer }} {{ none is none }} {{ false is false }} "
            + "{{ 2 is divisibleby 2 }} {{ 'a' is in 'abc' }} {{ 1 is equalto 1 }}",
            "True True True True True True True True True True True True")
        assertRenders("{{ 2.5|round }} {{ 3.5|round }} {{ 1.26|round(1, 'floor') }} {{ m|attr('role') }}|",
                      "2.0 4.0 1.2 |", ["m": .dictionary(TemplateDictionary([("role", .string("user"))]))])
        assertRenders("[{{ 'ab'.center(5) }}][{{ 'x'.ljust(3, '.') }}][{{ 'x'.rjust(3) }}][{{ '-5'.zfill(4) }}][{{ 'x'|center(4) }}]",
                      "[  ab ][x..][  x][-005][ x  ]")
        assertRenders("{{ '{} and {name}'.format(1, name='x') }} {{ '%s-%d' % ('a', 2) }} {{ 'a b c'|wordcount }}",
                      "1 and x a-2 3")
    }

    func testRaiseExceptionAndErrorsNameLineAndColumn() {
        assertFails("{% if true %}\n  {{ raise_exception('Roles must alternate') }}\n{% endif %}",
                    line: 2, column: 6, mentioning: "Roles must alternate")
        assertFails("{{ 1 + }}", line: 1, column: 8, mentioning: "expected an expression")
        assertFails("a\n{% if x %}\nno end", line: 3, column: 7, mentioning: "'if' opened at line 2, column 4")
        assertFails("{% include 'x.html' %}", line: 1, column: 4, mentioning: "include")
        assertFails("\n\n  {{ x|nosuchfilter }}", line: 3, column: 8, mentioning: "nosuchfilter")
        assertFails("{{ 'a' + 1 }}", line: 1, column: 8, mentioning: "unsupported operand")
        assertFails("{{ 'x' ", line: 1, column: 1, mentioning: "not closed")
        assertFails("x\n {% endif %}", line: 2, column: 5, mentioning: "no open block")
        assertFails("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", line: 1, column: 19,
                    mentioning: "maximum recursion depth")
        assertThrows(["syntax error at line 1", "nested more than 200"]) {
            try ChatTemplate(source: "{{ " + String(repeating: "(", count: 500) + "1" + String(repeating: ")", count: 500)
                + " }}")
        }
        assertFails("{{ 'x' * 100000000 }}", line: 1, column: 8, mentioning: "repeating")
    }

    func testStrftimeNowAndMessageNormalisation() throws {
        let text = try XCTUnwrap(render("{{ strftime_now('%Y') }}"))
        XCTAssertEqual(text.count, 4)
        let template = try ChatTemplate(source: "{% for m in messages %}{{ m|tojson }}{% endfor %}{{ tools }}")
        let message = JSONValue.object([("role", .string("assistant")), ("content", .string("x")),
                                        ("name", .null), ("reasoning", .string("r"))])
        XCTAssertEqual(try template.render(messages: [message]),
                       "{\"thinking\": \"r\", \"role\": \"assistant\", \"content\": \"x\", \"reasoning\": \"r\", "
                           + "\"reasoning_content\": \"r\"}None")
    }

    func testLoadingFromTokenizerConfig() throws {
        let folder = try temporaryDirectory(for: self)
        let config = folder.appendingPathComponent("tokenizer_config.json")
        try Data("""
            {"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
             "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
                               {"name": "tool_use", "template": "tools:{{ tools|length }}"}]}
            """.utf8).write(to: config)
        let loaded = try TokenizerChatTemplate.load(path: folder.path)
        let messages: [JSONValue] = [.object([("role", .string("user")), ("content", .string("hi"))])]
        XCTAssertEqual(try loaded.render(messages: messages), "<s>hi</s>")
        XCTAssertEqual(try loaded.render(messages: messages, tools: .array([.object([])])), "tools:1")
        // transformers 5 saves the template as chat_template.jinja, which wins over the config's.
        try Data("jinja file: {{ messages|length }}\n".utf8).write(to: folder.appendingPathComponent("chat_template.jinja"))
        XCTAssertEqual(try TokenizerChatTemplate.load(path: config.path).render(messages: messages), "jinja file: 1")
        try Data("{\"eos_token\": \"</s>\"}".utf8).write(to: config)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("chat_template.jinja"))
        assertThrows(["no chat_template"]) { try TokenizerChatTemplate.load(path: config.path) }
    }
}
