# Checks that the code blocks README.md quotes from the examples are the examples' current code.
#
#   cmake -DREADME=README.md -DSNIPPET_DIRS=examples -P examples/check_snippets.cmake            check
#   cmake -DREADME=README.md -DSNIPPET_DIRS=examples -DUPDATE=ON -P examples/check_snippets.cmake rewrite
#
# In a source file a region is marked by lines `// [snippet:NAME]` and `// [/snippet:NAME]`; it is
# quoted without the marker lines and without the indentation of the opening marker. In README.md,
# `<!-- snippet: NAME -->` names the ```cpp block that follows it.
# Works on whole strings with string(FIND)/SUBSTRING: C++ is full of semicolons, which CMake lists split.

cmake_minimum_required(VERSION 3.20)
if(NOT README OR NOT SNIPPET_DIRS)
  message(FATAL_ERROR "usage: cmake -DREADME=<file> -DSNIPPET_DIRS=<dir> [-DUPDATE=ON] -P check_snippets.cmake")
endif()

file(READ "${README}" readme)
set(sources)
foreach(dir IN LISTS SNIPPET_DIRS)
  file(GLOB found "${dir}/*.cpp" "${dir}/*.hpp" "${dir}/*.cu")
  list(APPEND sources ${found})
endforeach()

# The region NAME from the sources, dedented, into out_var (FATAL_ERROR if not exactly one).
function(snippet_region name out_var)
  set(begin_marker "// [snippet:${name}]\n")
  set(end_marker "// [/snippet:${name}]")
  set(found_in "")
  foreach(src IN LISTS sources)
    file(READ "${src}" text)
    string(FIND "${text}" "${begin_marker}" b)
    if(b EQUAL -1)
      continue()
    endif()
    if(found_in)
      message(FATAL_ERROR "snippet '${name}' is marked in both ${found_in} and ${src}")
    endif()
    set(found_in "${src}")
    # Indentation of the opening marker: the characters between the previous newline and it.
    string(SUBSTRING "${text}" 0 ${b} before)
    string(FIND "${before}" "\n" nl REVERSE)
    math(EXPR indent_start "${nl} + 1")
    math(EXPR indent_len "${b} - ${indent_start}")
    string(SUBSTRING "${before}" ${indent_start} ${indent_len} indent)
    string(LENGTH "${begin_marker}" blen)
    math(EXPR body_start "${b} + ${blen}")
    string(SUBSTRING "${text}" ${body_start} -1 rest)
    string(FIND "${rest}" "${end_marker}" e)
    if(e EQUAL -1)
      message(FATAL_ERROR "${src}: snippet '${name}' has no closing marker")
    endif()
    string(SUBSTRING "${rest}" 0 ${e} body)
    # Drop the closing marker's own indentation (the body ends with "\n<indent>").
    string(REGEX REPLACE "\n[ ]*$" "\n" body "${body}")
    if(NOT indent STREQUAL "")
      # Every line of the body starts after a newline once one is put in front (no "^": CMake's
      # REGEX REPLACE matches it again at each position where the previous match ended).
      string(REPLACE "\n${indent}" "\n" body "\n${body}")
      string(SUBSTRING "${body}" 1 -1 body)
    endif()
    set(region "${body}")
  endforeach()
  if(NOT found_in)
    message(FATAL_ERROR "README.md quotes snippet '${name}', which no file in ${SNIPPET_DIRS} marks")
  endif()
  set(${out_var} "${region}" PARENT_SCOPE)
  set(${out_var}_file "${found_in}" PARENT_SCOPE)
endfunction()

string(REGEX MATCHALL "<!-- snippet: [A-Za-z0-9_.-]+ -->" markers "${readme}")
if(NOT markers)
  message(FATAL_ERROR "${README} quotes no snippets")
endif()
set(stale "")
set(updated "${readme}")
foreach(marker IN LISTS markers)
  string(REGEX REPLACE "<!-- snippet: ([A-Za-z0-9_.-]+) -->" "\\1" name "${marker}")
  snippet_region(${name} code)
  # The README's block: from the ```cpp line after the marker to the closing ``` line.
  string(FIND "${updated}" "${marker}" m)
  string(SUBSTRING "${updated}" ${m} -1 after)
  string(FIND "${after}" "```cpp\n" f)
  if(f EQUAL -1)
    message(FATAL_ERROR "${README}: no ```cpp block follows ${marker}")
  endif()
  math(EXPR open_at "${m} + ${f} + 7")
  string(SUBSTRING "${updated}" ${open_at} -1 block_and_rest)
  string(FIND "${block_and_rest}" "```" close)
  string(SUBSTRING "${block_and_rest}" 0 ${close} quoted)
  if(NOT quoted STREQUAL code)
    list(APPEND stale "${name}")
    string(SUBSTRING "${updated}" 0 ${open_at} head)
    string(SUBSTRING "${block_and_rest}" ${close} -1 tail)
    set(updated "${head}${code}${tail}")
  endif()
endforeach()

if(stale)
  if(UPDATE)
    file(WRITE "${README}" "${updated}")
    message(STATUS "rewrote snippets in ${README}: ${stale}")
  else()
    message(FATAL_ERROR "${README} quotes stale code for snippets: ${stale}\nRewrite them with: cmake "
                        "-DREADME=${README} -DSNIPPET_DIRS=${SNIPPET_DIRS} -DUPDATE=ON -P ${CMAKE_CURRENT_LIST_FILE}")
  endif()
else()
  list(LENGTH markers n)
  message(STATUS "${README}: ${n} snippets match the examples")
endif()
