# The web console's files (console/), embedded in witmqd: witmq_console_files(OUT) adds the rule
# that generates OUT (a C++ source defining net::console_files()) from them. Used by src/net and
# by the fuzz build, which compiles the same HTTP routes.
get_filename_component(WITMQ_CONSOLE_DIR ${CMAKE_CURRENT_LIST_DIR}/../console ABSOLUTE)
set(WITMQ_CONSOLE_FILES index.html console.css console.js)
set(WITMQ_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_console.cmake)

function(witmq_console_files out)
  set(inputs "")
  foreach(f IN LISTS WITMQ_CONSOLE_FILES)
    list(APPEND inputs ${WITMQ_CONSOLE_DIR}/${f})
  endforeach()
  string(REPLACE ";" "," files "${WITMQ_CONSOLE_FILES}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${WITMQ_CONSOLE_DIR} -DOUTPUT=${out}
            "-DFILES=${files}" -P ${WITMQ_EMBED_SCRIPT}
    DEPENDS ${inputs} ${WITMQ_EMBED_SCRIPT}
    COMMENT "Embedding the web console"
    VERBATIM)
endfunction()
