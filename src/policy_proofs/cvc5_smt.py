"""An SMT-LIB 2 solver on standard input and output, driving cvc5's library.

PyPI's `cvc5` wheel ships the cvc5 library with its SMT-LIB parser but no
solver program; `cedar-policy-symcc` talks to a solver program over a pipe,
as it would to `cvc5 --lang smt`. This program is that solver: it reads one
complete command at a time (balanced parentheses, outside string literals,
quoted symbols and comments), hands it to cvc5's own parser and prints what
cvc5 answers, flushing after every command because the caller waits for the
answer before it writes the next command.

The gateway runs it as `python3 -c <this file> [--tlimit-per=MS]` with an
interpreter that has `cvc5` installed (docs/policy-guide.md, proofs).
Errors are answered as cvc5 answers them, `(error "...")`; a parse error
ends the program, as it ends cvc5.
"""
import sys

import cvc5


def complete_commands(stream):
    """Yields the text of each complete top-level S-expression in `stream`."""
    command = []
    depth = 0
    in_string = in_quoted_symbol = in_comment = False
    pending_quote = False  # a '"' inside a string: the end, or the first of '""'
    while True:
        chunk = stream.readline()
        if not chunk:
            return
        for char in chunk:
            if pending_quote:
                pending_quote = False
                if char == '"':  # '""' is a quote inside the string
                    command.append(char)
                    continue
                in_string = False
            if in_comment:
                if char == "\n":
                    in_comment = False
                continue
            if in_string:
                command.append(char)
                if char == '"':
                    pending_quote = True
                continue
            if in_quoted_symbol:
                command.append(char)
                if char == "|":
                    in_quoted_symbol = False
                continue
            if char == ";":
                in_comment = True
                continue
            if depth == 0 and char.isspace():
                continue
            command.append(char)
            if char == '"':
                in_string = True
            elif char == "|":
                in_quoted_symbol = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    yield "".join(command)
                    command = []


def quoted(message):
    return '"' + message.replace('"', '""') + '"'


def main(arguments):
    terms = cvc5.TermManager()
    solver = cvc5.Solver(terms)
    # cvc5's own option syntax: --name=value, --name value, or --name alone.
    # `--lang smt` is accepted too (SMT-LIB is the only language read here).
    arguments = list(arguments)
    while arguments:
        name, has_value, value = arguments.pop(0).removeprefix("--").partition("=")
        if not has_value:
            value = arguments.pop(0) if arguments and not arguments[0].startswith("--") else "true"
        solver.setOption(name, value)
    symbols = cvc5.SymbolManager(terms)
    parser = cvc5.InputParser(solver, symbols)
    parser.setIncrementalStringInput(cvc5.InputLanguage.SMT_LIB_2_6, "stdin")
    out = sys.stdout
    for text in complete_commands(sys.stdin):
        try:
            parser.appendIncrementalStringInput(text + "\n")
            command = parser.nextCommand()
        except Exception as error:  # cvc5 reports parse errors as exceptions
            out.write("(error " + quoted("Parse Error: " + str(error)) + ")\n")
            out.flush()
            return 1
        if command.isNull():
            continue
        if command.getCommandName() == "exit":
            return 0
        try:
            out.write(command.invoke(solver, symbols))
        except Exception as error:
            out.write("(error " + quoted(str(error)) + ")\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
