<%@ page session="false" contentType="text/html; charset=UTF-8" trimDirectiveWhitespaces="true" %>
<%--
  The demo web site of the autoscaler: one page that costs a fixed service time.

  Each request sleeps autoscaler.serviceTimeMs milliseconds (a context parameter the
  tomcat-web image's boot script sets from image.conf / the user data's web.conf), so a
  VM with THREADS AJP threads behaves as a THREADS-server queue.

  The body is the same bytes on every VM and every request: ab counts a response whose
  length differs from the first one as a failed request. The serving VM is named in the
  X-Autoscaler-VM response header instead.
--%>
<%!
    private long serviceTimeMs = 50;
    private String vmName;

    public void jspInit() {
        String ms = getServletContext().getInitParameter("autoscaler.serviceTimeMs");
        if (ms != null) {
            try {
                serviceTimeMs = Math.max(0, Long.parseLong(ms.trim()));
            } catch (NumberFormatException e) {
                log("autoscaler.serviceTimeMs=" + ms + " is not a number; using " + serviceTimeMs);
            }
        }
        vmName = getServletContext().getInitParameter("autoscaler.vmName");
    }
%>
<%
    if (vmName != null) {
        response.setHeader("X-Autoscaler-VM", vmName);
    }
    response.setHeader("Cache-Control", "no-store");
    if (serviceTimeMs > 0) {
        try {
            Thread.sleep(serviceTimeMs);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
%>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>autoscaler demo site</title>
</head>
<body>
<h1>autoscaler demo site</h1>
<p>This page was served by one of the site's Tomcat VMs, through the Apache mod_jk splitter.</p>
<p id="timing">Measuring&hellip;</p>
<script>
window.addEventListener("load", function () {
  var nav = performance.getEntriesByType("navigation")[0];
  var ms = nav ? Math.round(nav.responseEnd - nav.requestStart) : NaN;
  document.getElementById("timing").textContent =
    isNaN(ms) ? "" : "Response time seen by this browser: " + ms + " ms.";
});
</script>
</body>
</html>
